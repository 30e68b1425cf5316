"""The app the hostile-input tests send to: one per package run, with the default limits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from model_store.mnist_data import MnistSplit, load_split


@pytest.fixture(scope="package")
def digits(mnist_dir: Path) -> MnistSplit:
    return load_split(mnist_dir, "test")


@pytest.fixture(scope="package")
def api(fixture_store: Path, mnist_dir: Path) -> Iterator[TestClient]:
    """The app with the default limits, spelled out so that MNIST_* variables cannot change them."""
    settings = Settings(
        model_store=fixture_store,
        data_dir=mnist_dir,
        reload_poll_seconds=0,
        max_upload_bytes=4 * 1024 * 1024,
        max_image_pixels=16_000_000,
        max_batch_images=256,
        max_array_images=10_000,
    )
    with TestClient(create_app(settings)) as client:
        yield client
