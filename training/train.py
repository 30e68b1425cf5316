"""Train a preset on MNIST, score it on the test set, and publish it as a new store version.

mnist-train --preset cnn --data-dir data/mnist
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from model_store.metadata import (
    CONFUSION_MATRIX_FILE,
    LEARNING_CURVES_FILE,
    MODEL_FILE,
    SAVED_MODEL_FILE,
    ModelMetadata,
    TrainingRecord,
)
from model_store.mnist_data import MNIST_FILES, MnistSplit, load_split
from model_store.pins import serving_version
from model_store.preprocessing import DEFAULT_INPUT_SPEC, to_model_input
from model_store.reporting import fail, one_line_errors
from model_store.runtimes import INSTALL_KERAS_HINT, keras_installed
from model_store.store import LoadedModel, ModelStore, NoModelError, with_onnx_export
from model_store.trust import trust_files
from training.arguments import FINE_TUNE_LIMIT, PROG, SERVING, hyperparameters_from, parse_args
from training.download import DEFAULT_MIRRORS, ensure_mnist
from training.drift_reference import write_drift_reference
from training.feedback import (
    Corrections,
    CorrectionsError,
    load_corrections,
    mix_in,
    outlier_pool,
    read_database_corrections,
)
from training.precision import training_precision
from training.presets import PRESETS, Hyperparameters, plain_layers
from training.progress import epoch_logger
from training.schedule import check_new_corrections
from training.splits import held_out_split, one_hot
from training.verdicts import EVALUATION_PER_FAMILY

if TYPE_CHECKING:
    import keras

log = logging.getLogger("training")
OUTLIER_POOL = 8000


@one_line_errors(PROG)
def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    store = ModelStore(args.store, args.name)
    if args.min_new_corrections is not None and not enough_new_corrections(args, store):
        return 0
    # Everything a run needs from the store and the corrections is checked before minutes of training.
    base = open_base(store, args.fine_tune_from)
    if base is not None and base.metadata.training.preset != args.preset:
        fail(
            PROG,
            f"version {base.version} is a {base.metadata.training.preset!r} model, "
            f"not --preset {args.preset}",
        )
    hp = hyperparameters_from(args, None if base is None else base.metadata.training.hyperparameters)
    limit = args.limit if args.limit is not None or base is None else FINE_TUNE_LIMIT
    against = serving_now(store, args.gate_against)
    corrections = read_corrections(args)
    if not (args.download_only or keras_installed()):
        fail(PROG, f"training needs Keras and TensorFlow, which this install lacks; {INSTALL_KERAS_HINT}")

    # Prepare the data: verified IDX files, scaled by the store's one input convention.
    if not args.no_download:
        ensure_mnist(args.data_dir, args.mirrors or DEFAULT_MIRRORS)
    if args.download_only:
        return 0
    precision = training_precision(
        hp.precision, "--precision" if args.precision else f"the {args.preset} preset's default"
    )
    hp = dataclasses.replace(hp, precision=precision.precision)
    # Only now: --help, a bad argument and --download-only never load TensorFlow.
    import keras

    from training.calibrate_trust import compute_trust
    from training.gate import run_gate
    from training.negatives import EVALUATION_SEED, draw
    from training.report import evaluate, plot_confusion_matrix, plot_learning_curves
    from training.robustness import benchmark, classifier, write_report

    keras.utils.set_random_seed(hp.seed)
    held_out, trained_on = held_out_split(load_split(args.data_dir, "train"), hp.holdout, hp.seed, limit)
    test = load_split(args.data_dir, "test")
    mnist_samples = len(trained_on.labels)
    feedback = None if corrections is None else mix_in(corrections, trained_on, hp.outliers > 0)
    if feedback is not None:
        trained_on = feedback.mixed
    y_train = trained_on.labels
    validation = (to_model_input(held_out.images), one_hot(held_out.labels)) if hp.holdout else None
    x_test = to_model_input(test.images)

    # Build (or start from the base version's weights) and train.
    steps_per_epoch = -(-len(y_train) // hp.batch_size)
    with dtype_policy(hp.precision):
        model = PRESETS[args.preset].build(hp, steps_per_epoch)
        if base is not None:
            start_from(model, base)
        model.summary(print_fn=log.info)
        started, cpu_started = time.perf_counter(), time.process_time()
        history = model.fit(
            **training_data(trained_on, hp, None if feedback is None else feedback.trained),
            epochs=hp.epochs,
            validation_data=validation,
            verbose=args.verbose,
            callbacks=[epoch_logger(hp.epochs)],
        )
        train_seconds = time.perf_counter() - started
    # On a shared machine the wall time says little; the CPU time is what an idle one would spend.
    log.info(f"model.fit: {train_seconds:.0f} s wall, {time.process_time() - cpu_started:.0f} s of CPU")
    model = plain_layers(model)

    # Evaluate on the 10,000 test images.
    started = time.perf_counter()
    predicted = np.argmax(model.predict(x_test, batch_size=1000, verbose=0), axis=1)
    evaluation = evaluate(predicted, test.labels)
    evaluate_seconds = time.perf_counter() - started

    record = TrainingRecord(
        preset=args.preset,
        hyperparameters=dataclasses.asdict(hp) | {"limit": limit},
        precision=precision,
        quick=args.quick,
        history={key: [float(v) for v in values] for key, values in history.history.items()},
        train_samples=mnist_samples,
        validation_samples=hp.holdout,
        train_seconds=round(train_seconds, 2),
        evaluate_seconds=round(evaluate_seconds, 2),
        data_sha256={spec.name: spec.sha256 for spec in MNIST_FILES.values()},
        fine_tuned_from=None if base is None else base.version,
        feedback=None if feedback is None else feedback.record,
    )

    def write_version(folder: Path, version: int) -> ModelMetadata:
        log.info(f"test accuracy {evaluation.accuracy:.4f}; exporting version {version}")
        model.save(folder / MODEL_FILE)
        files = {
            "model": MODEL_FILE,
            "learning_curves": LEARNING_CURVES_FILE,
            "confusion_matrix": CONFUSION_MATRIX_FILE,
        }
        plot_learning_curves(record.history, folder / LEARNING_CURVES_FILE)
        plot_confusion_matrix(evaluation, folder / CONFUSION_MATRIX_FILE)
        if not args.no_savedmodel:
            # TF Serving, Triton and KServe read saved_model.pb from the version folder itself.
            model.export(str(folder), format="tf_saved_model", verbose=False)
            files["savedmodel"] = SAVED_MODEL_FILE
        trust = None
        if hp.holdout:
            log.info("fitting the verdicts on the held-out digits")
            trust = compute_trust(model, held_out, trained_on, test, folder)
            files |= trust_files()
            files |= write_drift_reference(folder, held_out.images, hp.seed)
        robustness = None
        if args.robustness:
            log.info("scoring MNIST-C's corruptions and rendered uploads")
            robustness = benchmark(classifier(model, DEFAULT_INPUT_SPEC), test.images, test.labels, hp.seed)
            files |= write_report(folder, robustness, f"{args.name} ({args.preset}, seed {hp.seed})")
        metadata = ModelMetadata(
            name=args.name,
            version=version,
            created_at=datetime.now(UTC),
            input=DEFAULT_INPUT_SPEC,
            evaluation=evaluation,
            training=record,
            library_versions=library_versions(),
            files=files,
            trust=trust,
            robustness=robustness,
        )
        # The int8 export is quantized from model.onnx, so that is written here, not by `publish`;
        # it is calibrated on the held-out digits, so a version trained without them has none.
        log.info("exporting model.onnx, then quantizing model.int8.onnx and measuring both precisions")
        metadata = with_int8_export(with_onnx_export(folder, metadata), folder, held_out, test)
        holdout = None if feedback is None else feedback.held_out.digits()
        log.info("gating against the serving version")
        gate = run_gate(
            (folder, metadata), against, holdout, draw(EVALUATION_SEED, EVALUATION_PER_FAMILY, test.images)
        )
        return metadata.model_copy(update={"gate": gate})

    version = store.publish(write_version)
    gate = store.read_metadata(version).gate
    print(
        f"test accuracy: {evaluation.accuracy:.4f} ({evaluation.correct}/{evaluation.total} correct); "
        f"trained in {train_seconds:.0f} s; published {store.describe(version)}"
    )
    if gate is not None and not gate.passed:
        fail(PROG, f"version {version} is kept but will never be served: {gate.reason}")
    return 0


def with_int8_export(
    metadata: ModelMetadata, folder: Path, held_out: MnistSplit, test: MnistSplit
) -> ModelMetadata:
    """The metadata with the int8 export and its proof, if the version has an ONNX export and
    held-out digits to calibrate on; serving runs float32 without it."""
    from training.quantize import export_int8

    if metadata.onnx is None or not len(held_out.labels):
        return metadata
    try:
        int8 = export_int8(folder, metadata, held_out, test)
    except Exception as exc:  # the quantizer refusing an op: serving runs float32, never wrong
        log.warning("no int8 export, serving will run float32: %s", exc)
        return metadata
    return metadata.model_copy(update={"files": metadata.files | {"int8": int8.file}, "int8": int8})


def serving_now(store: ModelStore, version: int | None) -> tuple[Path, ModelMetadata] | None:
    """The version the gate compares with: `version`, else the pinned one, else the newest the gate
    did not reject; None when the store serves nothing yet."""
    try:
        chosen = store.resolve(version) if version is not None else serving_version(store)
    except NoModelError:
        if version is not None:
            raise
        return None
    metadata = store.read_metadata(chosen)
    if metadata.training.quick and version is None:
        # A quick first model only holds the port until the full one is published: a baseline that
        # flags more non-digits for being unsure of everything would reject the model it waits for.
        log.info("gate: version %d is a quick first model, not a baseline; nothing to compare", chosen)
        return None
    return store.version_path(chosen), metadata


def read_corrections(args: argparse.Namespace) -> Corrections | None:
    """The corrections to train on: from the export `--feedback-file`, from the database with
    `--feedback`, else none."""
    try:
        if args.feedback_file is not None:
            return load_corrections(args.feedback_file)
        if args.feedback:
            return read_database_corrections(args.database_url, args.name)
    except CorrectionsError as exc:
        fail(PROG, f"{'--feedback-file' if args.feedback_file is not None else '--feedback'}: {exc}")
    return None


def enough_new_corrections(args: argparse.Namespace, store: ModelStore) -> bool:
    """Whether `--min-new-corrections` arrived; says so on stdout either way."""
    try:
        check = check_new_corrections(store, args.database_url, args.name, args.min_new_corrections)
    except CorrectionsError as exc:
        fail(PROG, f"--feedback: {exc}")
    print(check.summary(), flush=True)
    return check.due


def open_base(store: ModelStore, chosen: int | str | None) -> LoadedModel | None:
    """The version `--fine-tune-from` names (SERVING: the one the store serves now), or None."""
    if chosen is None:
        return None
    if chosen == SERVING:
        try:
            chosen = serving_version(store)
        except NoModelError:
            fail(PROG, f"--fine-tune-from {SERVING}: the store serves no version yet; train one first")
    return store.open(chosen)


def start_from(model: keras.Model, base: LoadedModel) -> None:
    """Copy the base version's weights into the freshly built `model` (its preset's network)."""
    try:
        model.set_weights(base.model.get_weights())
    except ValueError as exc:
        fail(PROG, f"version {base.version}'s weights do not fit the {model.name!r} network: {exc}")


def training_data(
    trained_on: MnistSplit, hp: Hyperparameters, corrections: Corrections | None
) -> dict[str, Any]:
    """`model.fit`'s data: the images as they are, or batches corrupted afresh with outliers added
    (the "not a digit" `corrections` among them)."""
    if not (hp.corrupted or hp.outliers):
        x, y = to_model_input(trained_on.images), one_hot(trained_on.labels)
        return {"x": x, "y": y, "batch_size": hp.batch_size, "shuffle": True}
    from training.batches import CorruptedBatches
    from training.outliers import pool

    # Enough outliers that each is seen about once an epoch; their corruptions differ every time.
    batches = -(-len(trained_on.labels) // hp.batch_size)
    extra = pool(min(OUTLIER_POOL, batches * hp.outliers)) if hp.outliers else np.zeros((0, 28, 28), np.uint8)
    if hp.outliers and corrections is not None:
        extra = outlier_pool(extra, corrections)
    data = CorruptedBatches(
        trained_on.images,
        trained_on.labels,
        hp.batch_size,
        hp.seed,
        hp.corrupted,
        extra,
        hp.outliers,
        workers=2,
    )
    # Shuffled by the batches themselves, seeded: Keras' own shuffle would reorder them unseeded.
    return {"x": data, "shuffle": False}


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Keras' process-wide dtype policy set to `name` inside, and back to float32 however it ends."""
    import keras

    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def library_versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {
        "python": sys.version.split()[0],
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
    }


if __name__ == "__main__":
    sys.exit(main())
