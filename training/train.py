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

from model_store.forward import INSTALL_KERAS_HINT, keras_installed
from model_store.metadata import (
    CONFUSION_MATRIX_FILE,
    LEARNING_CURVES_FILE,
    MODEL_FILE,
    SAVED_MODEL_FILE,
    Evaluation,
    ModelMetadata,
    PrecisionChoice,
    Robustness,
    TrainingRecord,
)
from model_store.mnist_data import MNIST_FILES, MnistSplit, load_split
from model_store.pins import serving_version
from model_store.preprocessing import DEFAULT_INPUT_SPEC, to_model_input
from model_store.reporting import fail, one_line_errors
from model_store.store import LoadedModel, ModelStore, NoModelError
from model_store.trust import Trust, trust_files
from training.arguments import FINE_TUNE_LIMIT, PROG, SERVING, hyperparameters_from, parse_args
from training.download import DEFAULT_MIRRORS, ensure_mnist
from training.drift_reference import write_drift_reference
from training.feedback import (
    Corrections,
    CorrectionsError,
    FeedbackMix,
    load_corrections,
    mix_in,
    outlier_pool,
    read_database_corrections,
)
from training.onnx_export import with_onnx_export
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


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a run was asked for, checked before minutes of training."""

    args: argparse.Namespace
    store: ModelStore
    base: LoadedModel | None  # the version fine-tuned from, if any
    hp: Hyperparameters
    limit: int | None
    against: tuple[Path, ModelMetadata] | None  # the version the gate compares with
    corrections: Corrections | None


@dataclasses.dataclass(frozen=True)
class Data:
    """The digits a run trains, holds out and tests on."""

    held_out: MnistSplit
    trained_on: MnistSplit  # MNIST's, with the corrections mixed in
    test: MnistSplit
    mnist_samples: int
    feedback: FeedbackMix | None


@dataclasses.dataclass(frozen=True)
class Trained:
    """A trained and scored model, ready to be written as a version."""

    model: keras.Model
    evaluation: Evaluation
    record: TrainingRecord


@one_line_errors(PROG)
def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    plan = check_plan(parse_args(argv))
    if plan is None:  # --min-new-corrections: too few yet, said in one line
        return 0
    args = plan.args
    # Prepare the data: verified IDX files, scaled by the store's one input convention.
    if not args.no_download:
        ensure_mnist(args.data_dir, args.mirrors or DEFAULT_MIRRORS)
    if args.download_only:
        return 0
    precision = training_precision(
        plan.hp.precision, "--precision" if args.precision else f"the {args.preset} preset's default"
    )
    plan = dataclasses.replace(plan, hp=dataclasses.replace(plan.hp, precision=precision.precision))
    # Only now: --help, a bad argument and --download-only never load TensorFlow.
    import keras

    keras.utils.set_random_seed(plan.hp.seed)
    data = load_data(plan)
    trained = train(plan, data, precision)
    version = plan.store.publish(lambda folder, number: write_version(plan, data, trained, folder, number))
    gate = plan.store.read_metadata(version).gate
    evaluation = trained.evaluation
    print(
        f"test accuracy: {evaluation.accuracy:.4f} ({evaluation.correct}/{evaluation.total} correct); "
        f"trained in {trained.record.train_seconds:.0f} s; published {plan.store.describe(version)}"
    )
    if gate is not None and not gate.passed:
        fail(PROG, f"version {version} is kept but will never be served: {gate.reason}")
    return 0


def check_plan(args: argparse.Namespace) -> Plan | None:
    """Everything a run needs from the store and the corrections, checked before minutes of training;
    None when `--min-new-corrections` finds too few new ones to train."""
    store = ModelStore(args.store, args.name)
    if args.min_new_corrections is not None and not enough_new_corrections(args, store):
        return None
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
    return Plan(args, store, base, hp, limit, against, corrections)


def load_data(plan: Plan) -> Data:
    """The held-out, training and test digits, with the corrections mixed into training."""
    hp, data_dir = plan.hp, plan.args.data_dir
    held_out, trained_on = held_out_split(load_split(data_dir, "train"), hp.holdout, hp.seed, plan.limit)
    mnist_samples = len(trained_on.labels)
    corrections = plan.corrections
    feedback = None if corrections is None else mix_in(corrections, trained_on, hp.outliers > 0)
    if feedback is not None:
        trained_on = feedback.mixed
    return Data(held_out, trained_on, load_split(data_dir, "test"), mnist_samples, feedback)


def train(plan: Plan, data: Data, precision: PrecisionChoice) -> Trained:
    """Build (or start from the base version's weights), train, and score on the 10,000 test images."""
    from training.report import evaluate

    args, hp, feedback = plan.args, plan.hp, data.feedback
    validation = (to_model_input(data.held_out.images), one_hot(data.held_out.labels)) if hp.holdout else None
    steps_per_epoch = -(-len(data.trained_on.labels) // hp.batch_size)
    with dtype_policy(hp.precision):
        model = PRESETS[args.preset].build(hp, steps_per_epoch)
        if plan.base is not None:
            start_from(model, plan.base)
        model.summary(print_fn=log.info)
        started, cpu_started = time.perf_counter(), time.process_time()
        history = model.fit(
            **training_data(data.trained_on, hp, None if feedback is None else feedback.trained),
            epochs=hp.epochs,
            validation_data=validation,
            verbose=args.verbose,
            callbacks=[epoch_logger(hp.epochs)],
        )
        train_seconds = time.perf_counter() - started
    # On a shared machine the wall time says little; the CPU time is what an idle one would spend.
    log.info(f"model.fit: {train_seconds:.0f} s wall, {time.process_time() - cpu_started:.0f} s of CPU")
    model = plain_layers(model)

    started = time.perf_counter()
    predicted = np.argmax(model.predict(to_model_input(data.test.images), batch_size=1000, verbose=0), axis=1)
    evaluation = evaluate(predicted, data.test.labels)
    evaluate_seconds = time.perf_counter() - started

    record = TrainingRecord(
        preset=args.preset,
        hyperparameters=dataclasses.asdict(hp) | {"limit": plan.limit},
        precision=precision,
        quick=args.quick,
        history={key: [float(v) for v in values] for key, values in history.history.items()},
        train_samples=data.mnist_samples,
        validation_samples=hp.holdout,
        train_seconds=round(train_seconds, 2),
        evaluate_seconds=round(evaluate_seconds, 2),
        data_sha256={spec.name: spec.sha256 for spec in MNIST_FILES.values()},
        fine_tuned_from=None if plan.base is None else plan.base.version,
        feedback=None if feedback is None else feedback.record,
    )
    return Trained(model, evaluation, record)


def write_version(plan: Plan, data: Data, trained: Trained, folder: Path, version: int) -> ModelMetadata:
    """Fill the store's staging folder: the model and its plots, the SavedModel, the verdicts and
    drift reference, the robustness report, the ONNX and int8 exports, and the gate's verdict."""
    from training.gate import run_gate
    from training.negatives import EVALUATION_SEED, draw

    args, model, evaluation = plan.args, trained.model, trained.evaluation
    log.info(f"test accuracy {evaluation.accuracy:.4f}; exporting version {version}")
    model.save(folder / MODEL_FILE)
    files = write_plots(trained, folder)
    if not args.no_savedmodel:
        # TF Serving, Triton and KServe read saved_model.pb from the version folder itself.
        model.export(str(folder), format="tf_saved_model", verbose=False)
        files["savedmodel"] = SAVED_MODEL_FILE
    trust, trust_files_written = fit_verdicts(plan, data, model, folder)
    robustness, robustness_files = score_robustness(plan, data, model, folder)
    metadata = ModelMetadata(
        name=args.name,
        version=version,
        created_at=datetime.now(UTC),
        input=DEFAULT_INPUT_SPEC,
        evaluation=evaluation,
        training=trained.record,
        library_versions=library_versions(),
        files=files | trust_files_written | robustness_files,
        trust=trust,
        robustness=robustness,
    )
    # The int8 export is quantized from model.onnx, so that is written here, not by `publish`;
    # it is calibrated on the held-out digits, so a version trained without them has none.
    log.info("exporting model.onnx, then quantizing model.int8.onnx and measuring both precisions")
    metadata = with_int8_export(with_onnx_export(folder, metadata), folder, data.held_out, data.test)
    holdout = None if data.feedback is None else data.feedback.held_out.digits()
    log.info("gating against the serving version")
    negatives = draw(EVALUATION_SEED, EVALUATION_PER_FAMILY, data.test.images)
    gate = run_gate((folder, metadata), plan.against, holdout, negatives)
    return metadata.model_copy(update={"gate": gate})


def write_plots(trained: Trained, folder: Path) -> dict[str, str]:
    """The learning curves and the confusion matrix; the metadata's `files` so far."""
    from training.report import plot_confusion_matrix, plot_learning_curves

    plot_learning_curves(trained.record.history, folder / LEARNING_CURVES_FILE)
    plot_confusion_matrix(trained.evaluation, folder / CONFUSION_MATRIX_FILE)
    return {
        "model": MODEL_FILE,
        "learning_curves": LEARNING_CURVES_FILE,
        "confusion_matrix": CONFUSION_MATRIX_FILE,
    }


def fit_verdicts(
    plan: Plan, data: Data, model: keras.Model, folder: Path
) -> tuple[Trust | None, dict[str, str]]:
    """The trust rule and the drift reference, fitted on the held-out digits (none without them)."""
    from training.calibrate_trust import compute_trust

    if not plan.hp.holdout:
        return None, {}
    log.info("fitting the verdicts on the held-out digits")
    trust = compute_trust(model, data.held_out, data.trained_on, data.test, folder)
    return trust, trust_files() | write_drift_reference(folder, data.held_out.images, plan.hp.seed)


def score_robustness(
    plan: Plan, data: Data, model: keras.Model, folder: Path
) -> tuple[Robustness | None, dict[str, str]]:
    """MNIST-C's corruptions and rendered uploads, with `--robustness` only."""
    from training.robustness import benchmark, classifier, write_report

    args = plan.args
    if not args.robustness:
        return None, {}
    log.info("scoring MNIST-C's corruptions and rendered uploads")
    robustness = benchmark(
        classifier(model, DEFAULT_INPUT_SPEC), data.test.images, data.test.labels, plan.hp.seed
    )
    return robustness, write_report(folder, robustness, f"{args.name} ({args.preset}, seed {plan.hp.seed})")


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
