"""Fixtures for the service: settings pointing at the fixture store, and a running app."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.config import Settings
from app.main import create_app
from bench.digits import encode
from model_store.forward import INT8_ONNX_FILE, ONNX_FILE
from model_store.metadata import METADATA_FILE, MODEL_FILE, ModelMetadata
from model_store.mnist_data import MnistSplit, load_split
from model_store.storage import StoreLocation
from model_store.store import ModelStore
from tests.support.model_versions import permuted_onnx
from training.onnx_export import with_onnx_export

__all__ = ["encode"]  # written once, in bench/digits.py; the tests import it from here


@pytest.fixture(scope="session")
def test_split(mnist_dir: Path) -> MnistSplit:
    return load_split(mnist_dir, "test")


@pytest.fixture(scope="session")
def settings(fixture_store: Path, mnist_dir: Path) -> Settings:
    return Settings(model_store=fixture_store, data_dir=mnist_dir)


@pytest.fixture(scope="session")
def client(settings: Settings) -> Iterator[TestClient]:
    """One app for the session: `with` runs the lifespan, so the model is really loaded."""
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def post_npy(client: TestClient, images: np.ndarray) -> httpx.Response:
    """POST uint8 images (N, 28, 28) to /predict/batch as one .npy body."""
    buffer = io.BytesIO()
    np.save(buffer, images)
    return client.post(
        "/predict/batch", content=buffer.getvalue(), headers={"Content-Type": "application/x-npy"}
    )


def paper_scan(pixels: np.ndarray, side: int = 112) -> np.ndarray:
    """A test digit as a person would photograph it: dark ink on light paper, larger, off-centre."""
    big = np.asarray(Image.fromarray(255 - pixels).resize((side, side), Image.Resampling.BICUBIC))
    paper = np.full((side + 30, side + 10), 235, dtype=np.uint8)
    paper[20 : 20 + side, 4 : 4 + side] = np.minimum(big, 235)
    return paper


def without_ids(body: object) -> object:
    """An answer without its prediction ids, which are new on every answer: what two answers to
    the same question share."""
    if isinstance(body, dict):
        return {k: without_ids(v) for k, v in body.items() if k not in ("prediction_id", "prediction_ids")}
    if isinstance(body, list):
        return [without_ids(item) for item in body]
    return body


def publish_copy(
    store_root: StoreLocation,
    source_version: int = 1,
    model_bytes: bytes | None = None,
    source_root: Path | None = None,
    quick: bool | None = None,
    adapt: Callable[[Path, ModelMetadata], ModelMetadata] | None = None,
) -> int:
    """Publish a new version holding version `source_version`'s files (or damaged model bytes),
    taken from the same store or from the one in `source_root`; marked as a quick first model or a
    full one if `quick` says so; `adapt(folder, metadata)` changes the copy before it is published."""
    store = ModelStore(store_root)
    source_store = ModelStore(source_root) if source_root is not None else store
    source = source_store.version_path(source_version)
    metadata = source_store.read_metadata(source_version)

    def write(folder: Path, version: int) -> ModelMetadata:
        for item in source.iterdir():
            if item.is_file() and item.name != METADATA_FILE and not item.name.startswith("."):
                shutil.copy2(item, folder / item.name)
        if model_bytes is not None:
            (folder / MODEL_FILE).write_bytes(model_bytes)
        training = metadata.training
        if quick is not None:
            training = training.model_copy(update={"quick": quick})
        # As mnist-train publishes: the export follows the weights (damaged weights get none).
        exported = with_onnx_export(
            folder, metadata.model_copy(update={"version": version, "training": training})
        )
        return adapt(folder, exported) if adapt is not None else exported

    return store.publish(write)


@pytest.fixture
def private_store(fixture_store: Path, tmp_path: Path) -> Path:
    """A copy of the fixture store that a test may add versions to."""
    return Path(shutil.copytree(fixture_store, tmp_path / "store"))


def publish_perturbed(store_root: Path, source_version: int = 1, seed: int = 1) -> int:
    """Publish a new version whose weights are version `source_version`'s with 10 % multiplicative
    noise: a real, working model whose probabilities differ from the source's for the same digit."""
    store = ModelStore(store_root)
    loaded = store.load(source_version)
    rng = np.random.default_rng(seed)
    weights = loaded.model.get_weights()
    loaded.model.set_weights([w * (1 + rng.normal(0, 0.1, w.shape)).astype(w.dtype) for w in weights])

    def write(folder: Path, version: int) -> ModelMetadata:
        for item in loaded.path.iterdir():
            if item.is_file() and item.name not in (METADATA_FILE, MODEL_FILE):
                shutil.copy2(item, folder / item.name)
        loaded.model.save(folder / MODEL_FILE)
        return with_onnx_export(folder, loaded.metadata.model_copy(update={"version": version}))

    return store.publish(write)


def publish_permuted(
    store_root: Path, permutation: list[int], source_version: int = 1, source_root: Path | None = None
) -> int:
    """Publish version `source_version` (of the store at `source_root`, default the same) with its
    labels permuted (`tests.support.model_versions`), straight into the store as a version that
    passed its gate; float32 ONNX only: the int8 export is left out, as a publication whose int8
    proof failed leaves it."""

    def permute(folder: Path, metadata: ModelMetadata) -> ModelMetadata:
        (folder / ONNX_FILE).write_bytes(permuted_onnx(folder / ONNX_FILE, permutation))
        (folder / INT8_ONNX_FILE).unlink(missing_ok=True)
        files = {role: name for role, name in metadata.files.items() if name != INT8_ONNX_FILE}
        return metadata.model_copy(update={"files": files, "int8": None})

    return publish_copy(store_root, source_version, source_root=source_root, adapt=permute)


@pytest.fixture
def two_versions(private_store: Path) -> Path:
    assert publish_perturbed(private_store) == 2
    return private_store
