"""The client is tested against the service's own fixtures (the trained store, the test split, the
server with gRPC), and 20 real test digits as PNG files."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_store.mnist_data import MnistSplit
from tests.app.conftest import encode, test_split
from tests.app.grpc.conftest import served

__all__ = ["served", "test_split"]
INDICES = list(range(20))


@pytest.fixture(scope="module")
def digit_files(test_split: MnistSplit, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("digits")
    paths = []
    for index in INDICES:
        path = folder / f"test-{index:02d}-label-{test_split.labels[index]}.png"
        path.write_bytes(encode(test_split.images[index]))
        paths.append(path)
    return paths
