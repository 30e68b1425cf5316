"""The int8 export of a version, and the proof that decides whether serving runs it by default.

At publish time `export_int8` quantizes the version's `model.onnx` statically (ONNX Runtime, QDQ,
per-channel weights), calibrated on held-out training digits, never on the test set. Then both
precisions are measured the same way, each on its own ONNX Runtime session:
clean test accuracy, the verdict on every test digit, the evaluation draw of non-digits, and, when
the robustness benchmark ran, MNIST-C and uploads. `decide` turns the numbers into the `default`
and `reason` recorded in the metadata; serving's `auto` precision reads only those.

    python -m training.quantize --store models --version 3 --data-dir data/mnist

quantizes a version already published (again, or for the first time), in place.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from model_store.forward import INT8_ONNX_FILE, ONNX_FILE, NumpyForward, file_sha256
from model_store.metadata import Int8Export, ModelMetadata, PrecisionScores
from model_store.mnist_data import MnistSplit
from model_store.preprocessing import InputSpec, to_model_input
from model_store.trust import TrustRule
from model_store.verdict_rule import ClassStatistics, judge, served_trust
from training import negatives
from training.onnx_export import onnx_forward
from training.report import UPLOAD_FAMILY, evaluate
from training.robustness import BATCH, benchmark
from training.verdicts import EVALUATION_PER_FAMILY, Outputs, measure

log = logging.getLogger("training")

CALIBRATION_SAMPLES = 1000  # held-out digits the activation ranges are measured on
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
# The rule, as limits on |int8 - float32|: accuracies are fractions, so 0.0005 is 0.05 points.
ACCURACY_LIMIT = 0.0005
VERDICT_AGREEMENT = 0.999
NEGATIVES_LIMIT = 0.01
MNIST_C_LIMIT = 0.002
UPLOADS_LIMIT = 0.001
# Accuracies are counts over a total; a difference of exactly the limit must not fail on rounding.
_SLACK = 1e-9


def quantize(float_file: Path, calibration: np.ndarray, spec: InputSpec, target: Path) -> None:
    """Write `target`: `float_file` statically quantized, its activation ranges measured on
    `calibration` (uint8 digits)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Digits(CalibrationDataReader):
        def __init__(self) -> None:
            x = to_model_input(calibration, spec)
            self._batches: Iterator[np.ndarray] = (x[i : i + 100] for i in range(0, len(x), 100))

        def get_next(self) -> dict[str, np.ndarray] | None:
            return {"images": batch} if (batch := next(self._batches, None)) is not None else None

    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(float_file), str(prepared), skip_symbolic_shape=True)  # ONNX inference suffices
        quantized = Path(scratch) / INT8_ONNX_FILE
        quantize_static(
            str(prepared),
            str(quantized),
            Digits(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            # Only the layers with weights, where the time goes: the input standardisation and the
            # softmax in 8 bits would cost precision and save nothing.
            op_types_to_quantize=list(QUANTIZED_OPS),
        )
        # Staged beside the target (the scratch folder may be another file system), then renamed:
        # a reader finds the old file or the new one, whole.
        staging = target.with_name(target.name + ".partial")
        shutil.copyfile(quantized, staging)
        os.replace(staging, target)


def outputs(forward: NumpyForward, images: np.ndarray, spec: InputSpec) -> Outputs:
    x = to_model_input(images, spec)
    passes = [forward(x[i : i + BATCH]) for i in range(0, len(x), BATCH)]
    return Outputs(images, np.concatenate([p[1] for p in passes]), np.concatenate([p[2] for p in passes]))


def scores(
    forward: NumpyForward,
    spec: InputSpec,
    test: MnistSplit,
    families: dict[str, np.ndarray],
    rule: TrustRule,
    statistics: ClassStatistics | None,
) -> tuple[PrecisionScores, np.ndarray]:
    """One precision's accuracy and negatives flagged, and its verdict code for every test digit."""
    digits = outputs(forward, test.images, spec)
    drawn = {name: outputs(forward, images, spec) for name, images in families.items()}
    row = measure(rule, statistics, digits, test.labels, drawn)
    verdicts = judge(test.images, digits.logits, digits.features, rule, statistics).codes
    accuracy = evaluate(digits.logits.argmax(axis=1), test.labels).accuracy
    return PrecisionScores(accuracy=accuracy, negatives_flagged=row["negatives"]), verdicts


def decide(float32: PrecisionScores, int8: PrecisionScores, verdict_agreement: float) -> tuple[bool, str]:
    """(default, reason): int8 is the default only if every rule holds and every number was measured."""

    def points(value: float) -> str:
        return f"{100 * value:.2f} %"

    def outside(name: str, a: float, b: float, limit: float) -> str | None:
        if abs(a - b) <= limit + _SLACK:
            return None
        return (
            f"{name} {points(b)} against float32's {points(a)} differs by {100 * abs(a - b):.2f} points "
            f"(limit {100 * limit:.2f})"
        )

    checks = [
        outside("clean test accuracy", float32.accuracy, int8.accuracy, ACCURACY_LIMIT),
        None
        if verdict_agreement >= VERDICT_AGREEMENT - _SLACK
        else f"verdicts agree on {points(verdict_agreement)} of test digits "
        f"(at least {points(VERDICT_AGREEMENT)})",
        outside("negatives flagged", float32.negatives_flagged, int8.negatives_flagged, NEGATIVES_LIMIT),
    ]
    missing = []
    for name, a, b, limit in (
        ("MNIST-C", float32.mnist_c_mean, int8.mnist_c_mean, MNIST_C_LIMIT),
        ("uploads", float32.uploads, int8.uploads, UPLOADS_LIMIT),
    ):
        if a is None or b is None:
            missing.append(name)
        else:
            checks.append(outside(f"{name} accuracy", a, b, limit))
    failed = next((check for check in checks if check is not None), None)
    if missing:
        reason = f"not proven: {' and '.join(missing)} not measured (train with --robustness)"
        return False, reason + (f"; and {failed}" if failed else "")
    if failed:
        return False, f"not the default: {failed}"
    return True, (
        f"the default: accuracy {points(int8.accuracy)} (float32 {points(float32.accuracy)}), verdicts agree "
        f"on {points(verdict_agreement)}, every rule within its limit"
    )


def export_int8(folder: Path, metadata: ModelMetadata, held_out: MnistSplit, test: MnistSplit) -> Int8Export:
    """Quantize the folder's model.onnx into model.int8.onnx and measure both against each other."""
    import onnxruntime

    spec, float_file, int8_file = metadata.input, folder / ONNX_FILE, folder / INT8_ONNX_FILE
    calibration = held_out.images[:CALIBRATION_SAMPLES]
    quantize(float_file, calibration, spec, int8_file)
    sessions = {
        "float32": onnx_forward(float_file.read_bytes()),
        "int8": onnx_forward(int8_file.read_bytes()),
    }
    # The verdict as served: the approximate score's when its proof passed.
    rule, statistics = served_trust(metadata.trust, folder)
    families = negatives.draw(negatives.EVALUATION_SEED, EVALUATION_PER_FAMILY, test.images)
    float32, float_verdicts = scores(sessions["float32"], spec, test, families, rule, statistics)
    int8, int8_verdicts = scores(sessions["int8"], spec, test, families, rule, statistics)
    if metadata.robustness is not None:
        # The benchmark's float32 numbers were measured on Keras, whose export agrees to 1e-5; the
        # same seed gives int8 the same corrupted images.
        float32 = float32.model_copy(
            update={
                "mnist_c_mean": metadata.robustness.mnist_c_mean,
                "uploads": metadata.robustness.families.get(UPLOAD_FAMILY),
            }
        )
        measured = benchmark(
            classifier(sessions["int8"], spec), test.images, test.labels, metadata.robustness.seed
        )
        int8 = int8.model_copy(
            update={"mnist_c_mean": measured.mnist_c_mean, "uploads": measured.families.get(UPLOAD_FAMILY)}
        )
    agreement = float(np.mean(float_verdicts == int8_verdicts))
    default, reason = decide(float32, int8, agreement)
    log.info("int8 export: %s", reason)
    return Int8Export(
        file=INT8_ONNX_FILE,
        sha256=file_sha256(int8_file),
        size_bytes=int8_file.stat().st_size,
        onnx_sha256=file_sha256(float_file),
        quantizer=f"onnxruntime {onnxruntime.__version__} quantize_static, QDQ, per-channel, MinMax, "
        f"{'/'.join(QUANTIZED_OPS)} only",
        calibration_samples=len(calibration),
        float32=float32,
        int8=int8,
        verdict_agreement=agreement,
        default=default,
        reason=reason,
    )


def classifier(forward: NumpyForward, spec: InputSpec) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 digits -> predicted digits through an ONNX Runtime session, for the robustness benchmark."""
    return lambda images: outputs(forward, images, spec).logits.argmax(axis=1)


PROG = "python -m training.quantize"


def main(argv: list[str] | None = None) -> int:
    """Quantize a published version in place: model.int8.onnx and its proof in the metadata."""
    import argparse
    import sys

    from model_store.reporting import fail, load_settings, one_line_errors
    from model_store.settings import StoreSettings, add_store_arguments

    settings = load_settings(PROG, StoreSettings)
    parser = argparse.ArgumentParser(prog=PROG, description=main.__doc__)
    add_store_arguments(parser, settings)
    parser.add_argument("--version", help="the version to quantize (default: the newest)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=settings.data_dir,
        help="the four MNIST .gz files (env MNIST_DATA_DIR)",
    )
    args = parser.parse_args(argv)

    from model_store.mnist_data import load_split
    from model_store.store import ModelStore
    from training.splits import held_out_split

    with one_line_errors(PROG):
        store = ModelStore(args.store, args.name)
        loaded = store.open(args.version)
        hp = loaded.metadata.training.hyperparameters
        if loaded.metadata.onnx is None:
            fail(
                PROG,
                f"version {loaded.version} has no model.onnx; write it: python -m model_store export-onnx",
            )
        if not hp.get("holdout"):
            fail(
                PROG,
                f"version {loaded.version} was trained without held-out digits to calibrate on; retrain it",
            )
        train, test = load_split(args.data_dir, "train"), load_split(args.data_dir, "test")
        held_out, _ = held_out_split(train, hp["holdout"], hp["seed"], hp.get("limit"))
        export = export_int8(loaded.path, loaded.metadata, held_out, test)
        files = loaded.metadata.files | {"int8": export.file}
        store.update_metadata(loaded.metadata.model_copy(update={"files": files, "int8": export}))
    sys.stdout.write(f"version {loaded.version}: {export.reason}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
