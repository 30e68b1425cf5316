"""The versioned model store: listing, resolving, atomic publishing and validated loading."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers

from model_store.metadata import METADATA_FILE, MODEL_FILE, ModelMetadata
from model_store.store import (
    InvalidModelError,
    LoadedModel,
    ModelStore,
    ModelStoreError,
    NoModelError,
    parse_version,
)
from tests.conftest import make_metadata

NAME = "mnist"
MARKER_FILE = "marker.txt"


def tiny_model(input_shape: tuple[int, ...] = (28, 28, 1), outputs: int = 10) -> keras.Model:
    return keras.Sequential(
        [keras.Input(input_shape), layers.Flatten(), layers.Dense(outputs, activation="softmax")]
    )


@pytest.fixture(scope="module")
def good_model() -> keras.Model:
    return tiny_model()


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path, NAME)


def write_version_folder(
    store: ModelStore,
    folder_name: str,
    model: keras.Model | None = None,
    metadata: ModelMetadata | None = None,
) -> Path:
    """Lay out a version folder by hand, bypassing publish(), so it can be made broken on purpose."""
    folder = store.model_dir / folder_name
    folder.mkdir(parents=True)
    if model is not None:
        model.save(folder / MODEL_FILE)
    if metadata is not None:
        (folder / METADATA_FILE).write_text(metadata.model_dump_json())
    return folder


def write_good_version(store: ModelStore, version: int, model: keras.Model) -> Path:
    return write_version_folder(store, str(version), model, make_metadata(store.name, version))


def empty_version_dirs(store: ModelStore, names: list[str]) -> None:
    for name in names:
        (store.model_dir / name).mkdir(parents=True)


# --- listing and resolving ------------------------------------------------------------------------


def test_versions_is_empty_when_model_folder_does_not_exist(store: ModelStore) -> None:
    assert store.versions() == []


def test_versions_ignores_temp_folders_files_and_non_integer_names(store: ModelStore) -> None:
    empty_version_dirs(store, ["1", "3", "10", ".tmp-0123abcd", "abc", "0", "-1", "2.5", "01", "١٢"])
    (store.model_dir / "4").write_text("a file, not a version folder")
    (store.model_dir / "notes.txt").write_text("stray")
    assert store.versions() == [1, 3, 10]


def test_resolve_without_versions_raises_no_model_error(store: ModelStore) -> None:
    with pytest.raises(NoModelError, match="no published version"):
        store.resolve()


def test_resolve_picks_numerically_newest_version(store: ModelStore) -> None:
    empty_version_dirs(store, ["1", "2", "9", "10", ".tmp-x"])
    assert store.resolve() == 10
    assert store.resolve(None) == 10


@pytest.mark.parametrize("pinned", [2, "2"])
def test_resolve_pinned_version(store: ModelStore, pinned: int | str) -> None:
    empty_version_dirs(store, ["1", "2", "3"])
    assert store.resolve(pinned) == 2


def test_resolve_pinned_missing_version_raises_no_model_error(store: ModelStore) -> None:
    empty_version_dirs(store, ["1", "3"])
    with pytest.raises(NoModelError) as excinfo:
        store.resolve(2)
    message = str(excinfo.value)
    assert "version 2" in message
    assert str(store.model_dir) in message


@pytest.mark.parametrize("text", ["../1", "0", "-1", "abc", "1/../2", "", " 1", "1.0", "+1", "/1", 0, -3])
def test_parse_version_refuses_non_positive_integers_and_paths(text: str | int) -> None:
    with pytest.raises(ModelStoreError, match="positive integer"):
        parse_version(text)


@pytest.mark.parametrize(("text", "expected"), [("1", 1), ("42", 42), (7, 7)])
def test_parse_version_accepts_positive_integers(text: str | int, expected: int) -> None:
    assert parse_version(text) == expected


def test_resolve_refuses_path_like_pin(store: ModelStore) -> None:
    empty_version_dirs(store, ["1", "2"])
    with pytest.raises(ModelStoreError):
        store.resolve("1/../2")


@pytest.mark.parametrize("name", ["", "a/b", ".hidden", ".tmp-x"])
def test_model_store_refuses_invalid_model_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(ModelStoreError, match="invalid model name"):
        ModelStore(tmp_path, name)


# --- publishing -----------------------------------------------------------------------------------


def marker_writer(
    store: ModelStore, marker: str = "x", delay: float = 0.0
) -> Callable[[Path, int], ModelMetadata]:
    def write(folder: Path, version: int) -> ModelMetadata:
        time.sleep(delay)
        (folder / MARKER_FILE).write_text(marker)
        return make_metadata(store.name, version)

    return write


def test_publish_numbers_versions_1_2_3(store: ModelStore) -> None:
    published = [store.publish(marker_writer(store)) for _ in range(3)]
    assert published == [1, 2, 3]
    assert store.versions() == [1, 2, 3]
    assert sorted(p.name for p in store.model_dir.iterdir()) == ["1", "2", "3"]
    for version in published:
        assert store.read_metadata(version).version == version


def test_publish_continues_after_highest_existing_version(store: ModelStore) -> None:
    empty_version_dirs(store, ["7", ".tmp-stale"])
    assert store.publish(marker_writer(store)) == 8


def test_publish_writes_metadata_with_assigned_version(store: ModelStore) -> None:
    def write(folder: Path, version: int) -> ModelMetadata:
        return make_metadata(store.name, 99)  # a writer that gets its version wrong

    version = store.publish(write)
    assert version == 1
    on_disk = json.loads((store.version_path(1) / METADATA_FILE).read_text())
    assert on_disk["version"] == 1
    assert store.read_metadata(1).version == 1


def test_publish_leaves_nothing_behind_when_writer_fails(store: ModelStore) -> None:
    def write(folder: Path, version: int) -> ModelMetadata:
        (folder / MARKER_FILE).write_text("half-written")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        store.publish(write)
    assert store.versions() == []
    assert list(store.model_dir.iterdir()) == []


def test_concurrent_publishes_get_distinct_versions_and_readers_never_see_partial_ones(
    store: ModelStore,
) -> None:
    n_publishers = 8
    start = threading.Barrier(n_publishers + 1)
    stop_reading = threading.Event()
    results: list[int] = []
    errors: list[BaseException] = []
    partial_views: list[str] = []
    observed: set[int] = set()
    lock = threading.Lock()

    def publisher(index: int) -> None:
        try:
            start.wait()
            delay = random.Random(index).uniform(0.01, 0.05)
            version = store.publish(marker_writer(store, f"publisher-{index}", delay))
            with lock:
                results.append(version)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    def reader() -> None:
        start.wait()
        while not stop_reading.is_set():
            for version in store.versions():
                folder = store.model_dir / str(version)
                observed.add(version)
                if not (folder / METADATA_FILE).is_file() or not (folder / MARKER_FILE).is_file():
                    partial_views.append(f"{folder}: {sorted(p.name for p in folder.iterdir())}")
                elif store.read_metadata(version).version != version:
                    partial_views.append(f"{folder}: metadata version differs")

    threads = [threading.Thread(target=publisher, args=(i,)) for i in range(n_publishers)]
    reading = threading.Thread(target=reader)
    reading.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    stop_reading.set()
    reading.join(timeout=30)

    assert errors == []
    assert sorted(results) == list(range(1, n_publishers + 1))
    assert partial_views == []
    assert observed  # the reader really saw versions appear while publishing went on
    assert store.versions() == list(range(1, n_publishers + 1))
    # No staging folder is left, and every publisher's marker landed in exactly one version.
    assert sorted(p.name for p in store.model_dir.iterdir()) == sorted(str(v) for v in results)
    markers = sorted((store.version_path(v) / MARKER_FILE).read_text() for v in results)
    assert markers == sorted(f"publisher-{i}" for i in range(n_publishers))
    for version in results:
        assert store.read_metadata(version).version == version


def test_publish_renumbers_when_another_publisher_takes_the_version(store: ModelStore) -> None:
    def write(folder: Path, version: int) -> ModelMetadata:
        # While this version is being written, someone else publishes the same number.
        if version == 1:
            store.publish(marker_writer(store, "intruder"))
        (folder / MARKER_FILE).write_text("slow")
        return make_metadata(store.name, version)

    assert store.publish(write) == 2
    assert (store.version_path(1) / MARKER_FILE).read_text() == "intruder"
    assert (store.version_path(2) / MARKER_FILE).read_text() == "slow"
    assert store.read_metadata(2).version == 2


# --- loading --------------------------------------------------------------------------------------


def test_load_returns_newest_good_version(store: ModelStore, good_model: keras.Model) -> None:
    write_good_version(store, 1, good_model)
    write_good_version(store, 2, good_model)
    loaded = store.load()
    assert isinstance(loaded, LoadedModel)
    assert loaded.version == 2
    assert loaded.name == NAME
    assert loaded.path == store.model_dir / "2"
    assert loaded.metadata == make_metadata(NAME, 2)
    probabilities = loaded.model.predict(np.zeros((3, 28, 28, 1), np.float32), verbose=0)
    assert probabilities.shape == (3, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(
        probabilities, good_model.predict(np.zeros((3, 28, 28, 1), np.float32), verbose=0), rtol=1e-6
    )


def test_load_pinned_version(store: ModelStore, good_model: keras.Model) -> None:
    write_good_version(store, 1, good_model)
    write_good_version(store, 2, good_model)
    assert store.load(1).version == 1
    assert store.load("1").path == store.model_dir / "1"


def test_load_of_published_version(store: ModelStore, good_model: keras.Model) -> None:
    def write(folder: Path, version: int) -> ModelMetadata:
        good_model.save(folder / MODEL_FILE)
        return make_metadata(store.name, version)

    assert store.publish(write) == 1
    assert store.load().version == 1


def test_load_with_no_versions_raises_no_model_error(store: ModelStore) -> None:
    with pytest.raises(NoModelError):
        store.load()


def assert_invalid(store: ModelStore, culprit: Path, *fragments: str, version: int | None = None) -> None:
    with pytest.raises(InvalidModelError) as excinfo:
        store.load(version)
    message = str(excinfo.value)
    assert str(culprit) in message
    for fragment in fragments:
        assert fragment in message


def test_load_rejects_missing_metadata(store: ModelStore, good_model: keras.Model) -> None:
    folder = write_version_folder(store, "1", good_model)
    assert_invalid(store, folder / METADATA_FILE, "metadata file is missing")


def test_load_rejects_invalid_json_metadata(store: ModelStore, good_model: keras.Model) -> None:
    folder = write_version_folder(store, "1", good_model)
    (folder / METADATA_FILE).write_text('{"name": "mnist", "version": 1,')
    assert_invalid(store, folder / METADATA_FILE, "invalid metadata")


def test_load_rejects_metadata_that_breaks_the_schema(store: ModelStore, good_model: keras.Model) -> None:
    folder = write_version_folder(store, "1", good_model)
    content = json.loads(make_metadata(NAME, 1).model_dump_json())
    content["evaluation"]["accuracy"] = 1.5
    del content["files"]
    (folder / METADATA_FILE).write_text(json.dumps(content))
    assert_invalid(store, folder / METADATA_FILE, "invalid metadata", "accuracy", "files")


def test_load_rejects_metadata_version_differing_from_folder(
    store: ModelStore, good_model: keras.Model
) -> None:
    folder = write_version_folder(store, "1", good_model, make_metadata(NAME, 2))
    assert_invalid(store, folder / METADATA_FILE, "version 2", "version 1")


def test_load_rejects_metadata_for_another_model_name(store: ModelStore, good_model: keras.Model) -> None:
    folder = write_version_folder(store, "1", good_model, make_metadata("fashion", 1))
    assert_invalid(store, folder / METADATA_FILE, "'fashion'")


def test_load_rejects_missing_model_file(store: ModelStore) -> None:
    folder = write_version_folder(store, "1", metadata=make_metadata(NAME, 1))
    assert_invalid(store, folder / MODEL_FILE, "model file is missing")


@pytest.mark.parametrize(
    "garbage",
    [b"", b"this is not a keras archive", b"PK\x03\x04" + bytes(range(256)) * 4],
    ids=["empty", "text", "broken-zip"],
)
def test_load_rejects_garbage_model_file(store: ModelStore, garbage: bytes) -> None:
    folder = write_version_folder(store, "1", metadata=make_metadata(NAME, 1))
    (folder / MODEL_FILE).write_bytes(garbage)
    assert_invalid(store, folder / MODEL_FILE, "cannot load model")


def test_open_checks_the_metadata_now_and_the_model_when_first_asked(store: ModelStore) -> None:
    folder = write_version_folder(store, "1", metadata=make_metadata(NAME, 1))
    (folder / MODEL_FILE).write_bytes(b"this is not a keras archive")
    opened = store.open()  # what serving on ONNX Runtime needs: no Keras, no TensorFlow
    assert (opened.version, opened.path) == (1, folder)
    with pytest.raises(InvalidModelError, match="cannot load model"):
        opened.model  # noqa: B018
    (folder / MODEL_FILE).unlink()
    with pytest.raises(InvalidModelError, match="model file is missing"):
        store.open()


def test_load_rejects_model_whose_input_shape_disagrees_with_metadata(store: ModelStore) -> None:
    folder = write_version_folder(store, "1", tiny_model(input_shape=(28, 28)), make_metadata(NAME, 1))
    assert_invalid(store, folder / MODEL_FILE, "input shape (28, 28)", "(28, 28, 1)")


def test_load_rejects_metadata_input_shape_disagreeing_with_model(
    store: ModelStore, good_model: keras.Model
) -> None:
    metadata = make_metadata(NAME, 1, input={"shape": (32, 32, 1)})
    folder = write_version_folder(store, "1", good_model, metadata)
    assert_invalid(store, folder / MODEL_FILE, "input shape (28, 28, 1)", "(32, 32, 1)")


def test_load_rejects_model_with_wrong_number_of_outputs(store: ModelStore) -> None:
    folder = write_version_folder(store, "1", tiny_model(outputs=5), make_metadata(NAME, 1))
    assert_invalid(store, folder / MODEL_FILE, "output shape")


def test_load_pinned_good_version_despite_broken_newest(store: ModelStore, good_model: keras.Model) -> None:
    write_good_version(store, 1, good_model)
    broken = write_version_folder(store, "2", metadata=make_metadata(NAME, 2))
    assert_invalid(store, broken / MODEL_FILE, "model file is missing")
    assert store.load(1).version == 1
