"""Short but real training runs on the real MNIST files, published into temporary stores."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from model_store.metadata import (
    CONFUSION_MATRIX_FILE,
    LEARNING_CURVES_FILE,
    METADATA_FILE,
    MODEL_FILE,
    SAVED_MODEL_FILE,
    ModelMetadata,
    PrecisionChoice,
)
from model_store.mnist_data import MnistSplit, load_split
from model_store.preprocessing import DEFAULT_INPUT_SPEC, to_model_input
from model_store.store import LoadedModel, ModelStore
from training.arguments import hyperparameters_from, parse_args
from training.presets import PRESETS, Hyperparameters
from training.report import evaluate
from training.train import main

pytestmark = pytest.mark.slow  # trains a model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TEST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
# SHA-256 of the decompressed files, as the MNIST distribution publishes them.
README_SHA256 = {
    "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


def train(store: Path, mnist_dir: Path, *extra: str, savedmodel: bool = False) -> None:
    argv = [
        "--store",
        str(store),
        "--data-dir",
        str(mnist_dir),
        "--no-download",
        "--verbose",
        "0",
        *extra,
    ]
    if not savedmodel:
        argv.append("--no-savedmodel")
    assert main(argv) == 0


@pytest.fixture(scope="module")
def mnist_test(mnist_dir: Path) -> MnistSplit:
    return load_split(mnist_dir, "test")


@pytest.fixture(scope="module")
def seed_store(seed_store: Path) -> ModelStore:
    """The session's short run of the notebook's dense net (tests/conftest.py: 12,000 images, 2
    epochs, seed 7, no SavedModel), rather than a second training of the same kind."""
    return ModelStore(seed_store)


@pytest.fixture(scope="module")
def seed_model(seed_store: ModelStore) -> LoadedModel:
    return seed_store.load()


@pytest.fixture(scope="module")
def seed_metadata(seed_model: LoadedModel) -> ModelMetadata:
    return seed_model.metadata


# --- the seed run -----------------------------------------------------------------------------------


def test_training_publishes_version_1_that_loads(seed_store: ModelStore, seed_model: LoadedModel) -> None:
    assert seed_store.versions() == [1]
    assert seed_model.version == 1
    assert seed_model.name == "mnist"
    assert seed_model.path == seed_store.model_dir / "1"
    assert sorted(p.name for p in seed_store.model_dir.iterdir()) == ["1"]


def test_training_accuracy_is_well_above_chance(seed_metadata: ModelMetadata) -> None:
    # 240 SGD steps of the dense net reach about 0.84; chance is 0.1.
    assert seed_metadata.evaluation.accuracy > 0.75


def test_training_evaluation_is_consistent(seed_metadata: ModelMetadata) -> None:
    evaluation = seed_metadata.evaluation
    matrix = np.array(evaluation.confusion_matrix)
    assert evaluation.total == 10_000
    assert evaluation.correct == int(np.trace(matrix))
    assert evaluation.accuracy == pytest.approx(evaluation.correct / evaluation.total)
    assert matrix.shape == (10, 10)
    assert matrix.sum(axis=1).tolist() == TEST_CLASS_COUNTS
    assert len(evaluation.per_class_accuracy) == 10
    expected_per_class = np.diag(matrix) / np.array(TEST_CLASS_COUNTS)
    np.testing.assert_allclose(evaluation.per_class_accuracy, expected_per_class, atol=1e-6)


def test_training_writes_png_plots_and_lists_files(seed_model: LoadedModel) -> None:
    for name in (LEARNING_CURVES_FILE, CONFUSION_MATRIX_FILE):
        assert (seed_model.path / name).read_bytes()[:8] == PNG_MAGIC
    assert seed_model.metadata.files == {
        "model": MODEL_FILE,
        "learning_curves": LEARNING_CURVES_FILE,
        "confusion_matrix": CONFUSION_MATRIX_FILE,
        "reliability_diagram": "reliability_diagram.png",
        "trust_statistics": "trust.npz",
        "trust_table": "trust.md",
        "drift_reference": "drift_reference.npz",
        "onnx": "model.onnx",  # the store's export, beside the model it came from
        "int8": "model.int8.onnx",
    }
    for name in seed_model.metadata.files.values():
        assert (seed_model.path / name).is_file()
    assert not (seed_model.path / SAVED_MODEL_FILE).exists()  # --no-savedmodel


def test_training_records_history_hyperparameters_and_data(seed_metadata: ModelMetadata) -> None:
    record = seed_metadata.training
    assert record.preset == "seed"
    assert len(record.history["loss"]) == 2
    assert len(record.history["accuracy"]) == 2
    assert record.history["loss"][1] < record.history["loss"][0]
    assert record.hyperparameters == {
        "epochs": 2,
        "batch_size": 100,
        "learning_rate": 0.01,
        "holdout": 5000,
        "seed": 7,
        "corrupted": 0.0,
        "outliers": 0,
        "precision": "float32",
        "weight_average": 0.0,
        "limit": 12000,
    }
    assert record.precision == PrecisionChoice(
        requested="float32", precision="float32", reason="asked for by the seed preset's default"
    )
    assert record.train_samples == 12000
    assert record.validation_samples == 5000
    assert len(record.history["val_loss"]) == 2
    assert record.data_sha256 == README_SHA256
    assert seed_metadata.input == DEFAULT_INPUT_SPEC
    assert {"python", "keras", "tensorflow", "numpy"} <= seed_metadata.library_versions.keys()


def test_metadata_on_disk_matches_loaded_metadata(seed_model: LoadedModel) -> None:
    on_disk = ModelMetadata.model_validate_json((seed_model.path / METADATA_FILE).read_bytes())
    assert on_disk == seed_model.metadata


def test_loaded_model_reproduces_recorded_evaluation(seed_model: LoadedModel, mnist_test: MnistSplit) -> None:
    probabilities = seed_model.model.predict(to_model_input(mnist_test.images), batch_size=1000, verbose=0)
    recomputed = evaluate(np.argmax(probabilities, axis=1), mnist_test.labels)
    assert recomputed.correct == seed_model.metadata.evaluation.correct
    assert recomputed == seed_model.metadata.evaluation


def test_loaded_model_reads_test_image_128_as_an_8(seed_model: LoadedModel, mnist_test: MnistSplit) -> None:
    assert mnist_test.labels[128] == 8
    probabilities = seed_model.model.predict(to_model_input(mnist_test.images[128:129]), verbose=0)
    assert probabilities.shape == (1, 10)
    assert int(np.argmax(probabilities[0])) == 8


# --- other runs ---------------------------------------------------------------------------------------


def test_same_seed_gives_identical_runs(tmp_path: Path, mnist_dir: Path) -> None:
    for _ in range(2):
        train(tmp_path, mnist_dir, "--preset", "seed", "--limit", "3000", "--epochs", "1", "--seed", "7")
    store = ModelStore(tmp_path)
    assert store.versions() == [1, 2]
    first, second = store.read_metadata(1), store.read_metadata(2)
    assert first.evaluation.accuracy == second.evaluation.accuracy
    assert first.evaluation == second.evaluation
    assert first.training.history == second.training.history


def test_cnn_run_exports_a_savedmodel_into_the_version_folder(tmp_path: Path, mnist_dir: Path) -> None:
    import tensorflow as tf

    train(
        tmp_path,
        mnist_dir,
        "--preset",
        "cnn",
        "--limit",
        "2000",
        "--epochs",
        "1",
        "--precision",
        "mixed_bfloat16",
        savedmodel=True,
    )
    store = ModelStore(tmp_path)
    loaded = store.load()
    folder = loaded.path
    assert loaded.version == 1
    assert (folder / SAVED_MODEL_FILE).is_file()
    assert (folder / "variables").is_dir()
    assert any((folder / "variables").iterdir())
    assert loaded.metadata.files["savedmodel"] == SAVED_MODEL_FILE
    assert loaded.metadata.training.preset == "cnn"
    assert loaded.metadata.training.hyperparameters["limit"] == 2000
    # Trained with a fused batch norm, published as stock Keras layers computing in float32.
    layers = json.loads(zipfile.ZipFile(folder / MODEL_FILE).read("config.json"))["config"]["layers"]
    assert {layer["module"] for layer in layers} == {"keras.layers"}
    policies = [layer["config"]["dtype"] for layer in layers if layer["class_name"] != "InputLayer"]
    assert {policy["config"]["name"] for policy in policies} == {"float32"}

    exported = tf.saved_model.load(str(folder))
    serving = exported.signatures["serving_default"]
    outputs = serving(tf.zeros((2, 28, 28, 1), tf.float32))
    (probabilities,) = outputs.values()
    assert tuple(probabilities.shape) == (2, 10)
    np.testing.assert_allclose(probabilities.numpy().sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(("cap", "precision"), [("AVX2", "float32"), ("AVX512_CORE_AMX", "mixed_bfloat16")])
def test_cnn_records_the_precision_auto_chose_and_why(
    tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch, cap: str, precision: str
) -> None:
    monkeypatch.setattr("training.precision.cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    train(tmp_path, mnist_dir, "--preset", "cnn", "--limit", "500", "--epochs", "1", "--holdout", "0")
    record = ModelStore(tmp_path).read_metadata(1).training
    assert record.precision is not None
    assert (record.precision.requested, record.precision.precision) == ("auto", precision)
    assert record.hyperparameters["precision"] == precision
    if precision == "float32":
        assert "ONEDNN_MAX_CPU_ISA=AVX2" in record.precision.reason


def test_a_run_that_fails_while_training_leaves_the_float32_policy_behind(
    tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dtype policy is process-wide: a caller that goes on after a failed run (a test, a notebook)
    must not build its next model in bfloat16."""
    import keras

    def out_of_space(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keras.Model, "fit", out_of_space)
    with pytest.raises(SystemExit):
        train(tmp_path, mnist_dir, "--preset", "cnn", "--limit", "500", "--precision", "mixed_bfloat16")
    assert keras.mixed_precision.global_policy().name == "float32"
    assert ModelStore(tmp_path).versions() == []


def test_training_without_data_and_no_download_fails_and_publishes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_root = tmp_path / "store"
    with pytest.raises(SystemExit) as exited:
        train(store_root, tmp_path / "no-data", "--preset", "seed", "--epochs", "1")
    assert exited.value.code == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"mnist-train: error: {tmp_path / 'no-data'}/train-images-idx3-ubyte.gz")
    assert "missing" in line and "set MNIST_DATA_DIR or --data-dir to a folder holding" in line
    assert ModelStore(store_root).versions() == []


# --- hyperparameters ----------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_hyperparameters_from_uses_preset_defaults_without_overrides(preset: str) -> None:
    assert hyperparameters_from(parse_args(["--preset", preset])) == PRESETS[preset].defaults


def test_hyperparameters_from_applies_every_override() -> None:
    args = parse_args(
        [
            "--preset",
            "seed",
            "--epochs",
            "3",
            "--batch-size",
            "64",
            "--learning-rate",
            "0.5",
            "--holdout",
            "1000",
            "--seed",
            "9",
            "--corrupted",
            "0.25",
            "--outliers",
            "8",
            "--precision",
            "mixed_bfloat16",
            "--weight-average",
            "0.99",
        ]
    )
    assert hyperparameters_from(args) == Hyperparameters(
        epochs=3,
        batch_size=64,
        learning_rate=0.5,
        holdout=1000,
        seed=9,
        corrupted=0.25,
        outliers=8,
        precision="mixed_bfloat16",
        weight_average=0.99,
    )


def test_hyperparameters_from_keeps_unset_fields_at_preset_defaults() -> None:
    defaults = PRESETS["cnn"].defaults
    hp = hyperparameters_from(parse_args(["--preset", "cnn", "--epochs", "4"]))
    assert hp.epochs == 4
    assert (hp.batch_size, hp.learning_rate, hp.holdout, hp.seed) == (
        defaults.batch_size,
        defaults.learning_rate,
        defaults.holdout,
        defaults.seed,
    )


def test_hyperparameters_from_keeps_explicit_zero_overrides() -> None:
    hp = hyperparameters_from(parse_args(["--preset", "cnn", "--seed", "0", "--holdout", "0"]))
    assert hp.seed == 0
    assert hp.holdout == 0


def test_download_only_stops_before_training(tmp_path: Path, mnist_dir: Path) -> None:
    """With the files present it needs no network, and it trains and publishes nothing."""
    store = tmp_path / "store"
    assert main(["--download-only", "--data-dir", str(mnist_dir), "--store", str(store)]) == 0
    assert ModelStore(store).versions() == []
