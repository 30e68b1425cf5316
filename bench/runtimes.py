"""Forward-pass runtimes side by side: TensorFlow, LiteRT, ONNX Runtime and OpenVINO on one version.

python -m bench.runtimes --store models --version 1,2 --threads 1

Each runtime runs the serving forward pass (probabilities, logits and penultimate features from one
pass, `model_store.runtimes.forward_function`), converted from the same tf.function: ONNX Runtime as
the service runs it (tf2onnx, as at publish time), LiteRT from a TFLite flatbuffer, OpenVINO reading
that flatbuffer. For batch 1, 8, 32 and 128 it reports the median wall time of one call and the
images per second that gives, the runtimes taking turns so that load from other processes falls on
all of them alike; and over the 10,000 MNIST test images the largest |probability difference| from
the Keras model and how many argmaxes differ. LiteRT and OpenVINO come from the `runtimes` extra
(`pip install -e '.[runtimes]'`); a runtime whose package is missing is listed as skipped.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from model_store.preprocessing import to_model_input
from model_store.runtimes import OUTPUTS, ForwardOutputs, NumpyForward

if TYPE_CHECKING:
    import keras

    from model_store.store import ModelStore

ROOT = Path(__file__).resolve().parents[1]
PROG = "python -m bench.runtimes"
RUNTIMES = ("tensorflow", "litert", "onnxruntime", "openvino")
BATCHES = (1, 8, 32, 128)
ROUNDS = 10


@dataclass(frozen=True)
class Row:
    model: str
    runtime: str
    seconds_per_call: dict[int, float]
    max_difference: float
    argmax_differs: int
    note: str = ""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path(os.environ.get("MNIST_MODEL_STORE", "models")))
    parser.add_argument("--name", default=os.environ.get("MNIST_MODEL_NAME", "mnist"))
    parser.add_argument(
        "--version", type=versions, default=None, help="versions to compare, e.g. 1,2 (default: newest)"
    )
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MNIST_DATA_DIR", "data/mnist")))
    parser.add_argument("--runtimes", type=runtime_list, default=RUNTIMES, help=",".join(RUNTIMES))
    parser.add_argument("--threads", type=positive, default=1, help="threads each runtime may use")
    parser.add_argument("--seconds", type=float, default=2.0, help="timing per runtime and batch size")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "runtimes.md")
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error(f"argument --seconds: {args.seconds} is not a positive number of seconds")
    return args


def versions(text: str) -> list[int]:
    parts = text.split(",")
    if not all(part.isdecimal() and int(part) >= 1 for part in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of versions")
    return [int(part) for part in parts]


def runtime_list(text: str) -> tuple[str, ...]:
    chosen = tuple(part.strip() for part in text.split(","))
    unknown = [name for name in chosen if name not in RUNTIMES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown runtime {unknown[0]!r}; choose from {','.join(RUNTIMES)}")
    return chosen


def positive(text: str) -> int:
    if not text.isdecimal() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from model_store.reporting import one_line_errors

    with one_line_errors(PROG):
        from model_store.mnist_data import load_split
        from model_store.store import ModelStore

        store = ModelStore(args.store, args.name)
        chosen = args.version or [store.resolve()]
        for version in chosen:
            store.resolve(version)  # every version exists before minutes of work begin
        test = load_split(args.data_dir, "test")
        # Before TensorFlow starts its thread pools.
        os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
        load_before = os.getloadavg()
        rows = [
            row
            for version in chosen
            for row in compare(store, version, test.images, args.runtimes, args.threads, args.seconds)
        ]
        table = render(rows, args, load_before)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
        sys.stdout.write(table)
    return 0


def compare(
    store: ModelStore,
    version: int,
    images: np.ndarray,
    runtimes: tuple[str, ...],
    threads: int,
    seconds: float,
) -> list[Row]:
    loaded = store.load(version)
    label = f"`{loaded.metadata.training.preset}` v{version}"
    x = to_model_input(images, loaded.metadata.input)
    reference = np.concatenate(
        [np.asarray(loaded.model(x[i : i + 500], training=False)) for i in range(0, len(x), 500)]
    )
    forwards: dict[str, NumpyForward] = {}
    rows = []
    for runtime in runtimes:
        try:
            forwards[runtime] = BUILDERS[runtime](loaded.model, tuple(loaded.metadata.input.shape), threads)
        except ImportError as exc:
            rows.append(Row(label, runtime, {}, float("nan"), 0, f"skipped: {exc}"))
    timings = {runtime: {batch: 0.0 for batch in BATCHES} for runtime in forwards}
    for batch in BATCHES:
        for runtime, seconds_per_call in time_interleaved(forwards, x[:batch], seconds).items():
            timings[runtime][batch] = seconds_per_call
    for runtime, forward in forwards.items():
        got = np.concatenate([forward(x[i : i + 128])[0] for i in range(0, len(x), 128)])
        differs = int((got.argmax(axis=1) != reference.argmax(axis=1)).sum())
        rows.append(Row(label, runtime, timings[runtime], float(np.abs(got - reference).max()), differs))
    return sorted(rows, key=lambda row: RUNTIMES.index(row.runtime))


def time_interleaved(
    forwards: Mapping[str, Callable[[np.ndarray], object]], batch: np.ndarray, seconds: float
) -> dict[str, float]:
    """Median seconds of one call of each runtime. The runtimes take turns in short rounds, so load
    from other processes that comes and goes falls on all of them alike."""
    for forward in forwards.values():
        for _ in range(3):
            forward(batch)
    times: dict[str, list[float]] = {runtime: [] for runtime in forwards}
    for _ in range(ROUNDS):
        for runtime, forward in forwards.items():
            deadline = time.perf_counter() + seconds / ROUNDS
            calls = 0
            while calls < 2 or time.perf_counter() < deadline:
                started = time.perf_counter()
                forward(batch)
                times[runtime].append(time.perf_counter() - started)
                calls += 1
    return {runtime: statistics.median(values) for runtime, values in times.items()}


def tensorflow(model: keras.Model, shape: tuple[int, ...], threads: int) -> NumpyForward:
    from model_store.runtimes import tensorflow_forward

    return tensorflow_forward(model, shape)


def onnxruntime(model: keras.Model, shape: tuple[int, ...], threads: int) -> NumpyForward:
    """What the service runs: the publish-time export in its ONNX Runtime session."""
    from model_store.runtimes import OnnxForward, onnx_bytes

    return OnnxForward(onnx_bytes(model, shape), threads)


def litert_bytes(model: keras.Model, shape: tuple[int, ...]) -> bytes:
    """The forward pass as a `.tflite` flatbuffer with one signature, `serving_default`."""
    import keras
    import tensorflow as tf

    from model_store.runtimes import forward_function

    # Through a SavedModel, so the flatbuffer keeps the output names; tracking the whole model
    # carries its state (augmentation layers' seed generators), which a bare tf.Module would miss.
    archive = keras.export.ExportArchive()
    archive.track(model)
    forward = forward_function(model, shape)
    archive.add_endpoint("serving_default", forward, input_signature=forward.input_signature)
    with tempfile.TemporaryDirectory(prefix="litert-") as folder:
        archive.write_out(folder, verbose=False)
        return bytes(tf.lite.TFLiteConverter.from_saved_model(folder).convert())


def litert(model: keras.Model, shape: tuple[int, ...], threads: int) -> NumpyForward:
    """The LiteRT interpreter (XNNPACK kernels), resized when the batch size changes."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=litert_bytes(model, shape), num_threads=threads)
    signature = interpreter.get_signature_runner("serving_default")
    images = signature.get_input_details()["images"]["index"]
    outputs = [signature.get_output_details()[name]["index"] for name in OUTPUTS]
    size = [0]

    def run(batch: np.ndarray) -> ForwardOutputs:
        if len(batch) != size[0]:
            interpreter.resize_tensor_input(images, list(batch.shape))
            interpreter.allocate_tensors()
            size[0] = len(batch)
        interpreter.set_tensor(images, batch)
        interpreter.invoke()
        probabilities, logits, features = (interpreter.get_tensor(index) for index in outputs)
        return probabilities, logits, features

    return run


def openvino(model: keras.Model, shape: tuple[int, ...], threads: int) -> NumpyForward:
    """OpenVINO reading the LiteRT flatbuffer (it finds the outputs by the flatbuffer's tensor names)."""
    import openvino as ov
    from ai_edge_litert.interpreter import Interpreter

    content = litert_bytes(model, shape)
    signature = Interpreter(model_content=content).get_signature_runner().get_output_details()
    with tempfile.TemporaryDirectory(prefix="openvino-") as folder:
        path = Path(folder) / "model.tflite"
        path.write_bytes(content)
        converted = ov.convert_model(path)
    # f32: on CPUs with AMX or AVX512-BF16 OpenVINO would otherwise compute in bfloat16.
    config = {
        "INFERENCE_NUM_THREADS": threads,
        "INFERENCE_PRECISION_HINT": "f32",
        "PERFORMANCE_HINT": "LATENCY",
    }
    compiled = ov.Core().compile_model(converted, "CPU", config)
    request = compiled.create_infer_request()
    tensors = [signature[name]["name"] for name in OUTPUTS]
    ports = [next(port for port in compiled.outputs if tensor in port.get_names()) for tensor in tensors]

    def run(batch: np.ndarray) -> ForwardOutputs:
        result = request.infer({0: batch})
        probabilities, logits, features = (result[port] for port in ports)
        return probabilities, logits, features

    return run


BUILDERS: dict[str, Callable[[keras.Model, tuple[int, ...], int], NumpyForward]] = {
    "tensorflow": tensorflow,
    "litert": litert,
    "onnxruntime": onnxruntime,
    "openvino": openvino,
}


def render(rows: list[Row], args: argparse.Namespace, load_before: tuple[float, float, float]) -> str:
    header = "| model | runtime | " + " | ".join(f"batch {b}: ms (img/s)" for b in BATCHES)
    header += " | max abs diff vs Keras | argmax differs |"
    lines = [header, "|" + " --- |" * 2 + " ---: |" * (len(BATCHES) + 2)]
    for row in rows:
        if row.note:
            lines.append(f"| {row.model} | {row.runtime} | {row.note} |" + " |" * (len(BATCHES) + 1))
            continue
        cells = [f"{t * 1e3:.3f} ({b / t:,.0f})" for b, t in row.seconds_per_call.items()]
        difference = f"{row.max_difference:.1e} | {row.argmax_differs}"
        lines.append(f"| {row.model} | {row.runtime} | {' | '.join(cells)} | {difference} |")
    load_after = os.getloadavg()
    facts = (
        f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, {args.threads} thread(s) per runtime, median of calls over "
        f"{args.seconds:g} s per cell; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after. "
        f"Differences over the 10,000 MNIST test images. Command: `{PROG} {' '.join(sys.argv[1:])}`"
    )
    return "\n".join(["# Forward-pass runtimes", "", facts, "", *lines, ""])


if __name__ == "__main__":
    sys.exit(main())
