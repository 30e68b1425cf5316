"""Train a preset on MNIST, score it on the test set, and publish it as a new store version.

mnist-train --preset cnn --data-dir data/mnist
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
from model_store.preprocessing import DEFAULT_INPUT_SPEC, to_model_input
from model_store.reporting import fail, one_line_errors
from model_store.runtimes import INSTALL_KERAS_HINT, keras_installed
from model_store.store import ModelStore, with_onnx_export
from model_store.trust import trust_files
from training.arguments import PROG, hyperparameters_from, parse_args
from training.download import DEFAULT_MIRRORS, ensure_mnist
from training.precision import training_precision
from training.presets import PRESETS, Hyperparameters, plain_layers
from training.progress import epoch_logger
from training.splits import held_out_split, one_hot

log = logging.getLogger("training")
OUTLIER_POOL = 8000


@one_line_errors(PROG)
def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    hp = hyperparameters_from(args)
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
    from training.quantize import export_int8
    from training.report import evaluate, plot_confusion_matrix, plot_learning_curves
    from training.robustness import benchmark, classifier, write_report

    keras.utils.set_random_seed(hp.seed)
    held_out, trained_on = held_out_split(load_split(args.data_dir, "train"), hp.holdout, hp.seed, args.limit)
    test = load_split(args.data_dir, "test")
    y_train = trained_on.labels
    validation = (to_model_input(held_out.images), one_hot(held_out.labels)) if hp.holdout else None
    x_test = to_model_input(test.images)

    # Build and train.
    steps_per_epoch = -(-len(y_train) // hp.batch_size)
    with dtype_policy(hp.precision):
        model = PRESETS[args.preset].build(hp, steps_per_epoch)
        model.summary(print_fn=log.info)
        started, cpu_started = time.perf_counter(), time.process_time()
        history = model.fit(
            **training_data(trained_on, hp),
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
        hyperparameters=dataclasses.asdict(hp) | {"limit": args.limit},
        precision=precision,
        quick=args.quick,
        history={key: [float(v) for v in values] for key, values in history.history.items()},
        train_samples=len(y_train),
        validation_samples=hp.holdout,
        train_seconds=round(train_seconds, 2),
        evaluate_seconds=round(evaluate_seconds, 2),
        data_sha256={spec.name: spec.sha256 for spec in MNIST_FILES.values()},
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
        log.info("exporting model.onnx")
        metadata = with_onnx_export(folder, metadata)
        if metadata.onnx is None or not hp.holdout:
            return metadata
        log.info("quantizing model.int8.onnx and measuring both precisions")
        try:
            int8 = export_int8(folder, metadata, held_out, test)
        except Exception as exc:  # the quantizer refusing an op: serving runs float32, never wrong
            log.warning("no int8 export, serving will run float32: %s", exc)
            return metadata
        return metadata.model_copy(update={"files": metadata.files | {"int8": int8.file}, "int8": int8})

    store = ModelStore(args.store, args.name)
    version = store.publish(write_version)
    print(
        f"test accuracy: {evaluation.accuracy:.4f} ({evaluation.correct}/{evaluation.total} correct); "
        f"trained in {train_seconds:.0f} s; published {store.version_path(version)}"
    )
    return 0


def training_data(trained_on: MnistSplit, hp: Hyperparameters) -> dict[str, Any]:
    """`model.fit`'s data: the images as they are, or batches corrupted afresh with outliers added."""
    if not (hp.corrupted or hp.outliers):
        x, y = to_model_input(trained_on.images), one_hot(trained_on.labels)
        return {"x": x, "y": y, "batch_size": hp.batch_size, "shuffle": True}
    from training.batches import CorruptedBatches
    from training.outliers import pool

    # Enough outliers that each is seen about once an epoch; their corruptions differ every time.
    batches = -(-len(trained_on.labels) // hp.batch_size)
    extra = pool(min(OUTLIER_POOL, batches * hp.outliers)) if hp.outliers else np.zeros((0, 28, 28), np.uint8)
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
