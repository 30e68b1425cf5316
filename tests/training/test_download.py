"""`ensure_mnist` against real HTTP mirrors on 127.0.0.1 serving copies of the real files."""

from __future__ import annotations

import functools
import gzip
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_store.mnist_data import MNIST_FILES, DatasetError, load_split
from tests.conftest import assert_one_line_error, run_cli
from training.download import ensure_mnist

ALL_NAMES = sorted(spec.name for spec in MNIST_FILES.values())
TEST_LABELS = MNIST_FILES["test", "labels"].name
FIRST_DOWNLOAD = MNIST_FILES["train", "images"].name


@dataclass
class Mirror:
    url: str
    requests: list[str] = field(default_factory=list)


class RecordingHandler(SimpleHTTPRequestHandler):
    """Serves a directory and records every requested path."""

    def __init__(self, *args: Any, requests: list[str], **kwargs: Any) -> None:
        self.requests = requests
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The mirrors are local: make sure httpx does not route them through a proxy from the env."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def serve() -> Iterator[Callable[[Path], Mirror]]:
    """Start an HTTP server on 127.0.0.1 (free port) serving a directory; stopped after the test."""
    servers: list[tuple[ThreadingHTTPServer, threading.Thread]] = []

    def start(directory: Path) -> Mirror:
        requests: list[str] = []
        handler = functools.partial(RecordingHandler, directory=str(directory), requests=requests)
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        servers.append((server, thread))
        return Mirror(url=f"http://127.0.0.1:{server.server_address[1]}/", requests=requests)

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def good_files(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """A mirror directory holding copies of the four real files."""
    folder = tmp_path_factory.mktemp("good-mirror")
    for name in ALL_NAMES:
        shutil.copyfile(mnist_dir / name, folder / name)
    return folder


def data_dir_with(tmp_path: Path, source: Path, names: list[str]) -> Path:
    """A data folder already holding `names`, copied from `source`."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for name in names:
        shutil.copyfile(source / name, data_dir / name)
    return data_dir


def flip_payload_bytes(gz: bytes) -> bytes:
    """Corrupt the deflate stream in the middle of a gzip file (header and trailer left alone)."""
    corrupted = bytearray(gz)
    middle = len(corrupted) // 2
    for offset in range(middle, middle + 16):
        corrupted[offset] ^= 0xFF
    return bytes(corrupted)


def wrong_content_gzip(gz: bytes) -> bytes:
    """A perfectly valid gzip whose content is MNIST-shaped but not MNIST's (two labels changed)."""
    raw = bytearray(gzip.decompress(gz))
    raw[8] = (raw[8] + 1) % 10
    raw[9] = (raw[9] + 1) % 10
    return gzip.compress(bytes(raw))


def truncated_download(gz: bytes) -> bytes:
    return gz[: len(gz) - 100]


@pytest.fixture(params=[flip_payload_bytes, wrong_content_gzip, truncated_download])
def corrupt_mirror_dir(request: pytest.FixtureRequest, tmp_path: Path, mnist_dir: Path) -> Path:
    """A mirror directory with a corrupted copy of the test labels."""
    folder = tmp_path / "bad-mirror"
    folder.mkdir()
    corrupt: Callable[[bytes], bytes] = request.param
    (folder / TEST_LABELS).write_bytes(corrupt((mnist_dir / TEST_LABELS).read_bytes()))
    return folder


def test_ensure_mnist_downloads_all_four_files_into_empty_dir(
    tmp_path: Path, good_files: Path, serve: Callable[[Path], Mirror], mnist_dir: Path
) -> None:
    mirror = serve(good_files)
    data_dir = tmp_path / "fresh" / "mnist"  # does not exist yet

    ensure_mnist(data_dir, [mirror.url], timeout=30)

    assert sorted(p.name for p in data_dir.iterdir()) == ALL_NAMES
    assert sorted(mirror.requests) == sorted(f"/{name}" for name in ALL_NAMES)
    for name in ALL_NAMES:
        assert (data_dir / name).read_bytes() == (mnist_dir / name).read_bytes()
    train, test = load_split(data_dir, "train"), load_split(data_dir, "test")
    assert train.labels.shape == (60_000,)
    assert np.bincount(test.labels, minlength=10).sum() == 10_000


def test_ensure_mnist_rejects_corrupt_copy_and_uses_next_good_mirror(
    tmp_path: Path,
    good_files: Path,
    corrupt_mirror_dir: Path,
    serve: Callable[[Path], Mirror],
    mnist_dir: Path,
) -> None:
    others = [name for name in ALL_NAMES if name != TEST_LABELS]
    data_dir = data_dir_with(tmp_path, mnist_dir, others)
    bad, good = serve(corrupt_mirror_dir), serve(good_files)

    ensure_mnist(data_dir, [bad.url, good.url], timeout=30)

    assert bad.requests == [f"/{TEST_LABELS}"]
    assert good.requests == [f"/{TEST_LABELS}"]
    # Only the four verified files: no partial download, no temp file, no corrupt copy.
    assert sorted(p.name for p in data_dir.iterdir()) == ALL_NAMES
    assert (data_dir / TEST_LABELS).read_bytes() == (mnist_dir / TEST_LABELS).read_bytes()
    load_split(data_dir, "test")


def test_ensure_mnist_falls_through_404_mirror(
    tmp_path: Path, good_files: Path, serve: Callable[[Path], Mirror], mnist_dir: Path
) -> None:
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    data_dir = data_dir_with(tmp_path, mnist_dir, [n for n in ALL_NAMES if n != TEST_LABELS])
    missing, good = serve(empty), serve(good_files)

    ensure_mnist(data_dir, [missing.url, good.url], timeout=30)

    assert missing.requests == [f"/{TEST_LABELS}"]
    assert good.requests == [f"/{TEST_LABELS}"]
    assert sorted(p.name for p in data_dir.iterdir()) == ALL_NAMES
    load_split(data_dir, "test")


def test_ensure_mnist_falls_through_unreachable_mirror(
    tmp_path: Path, good_files: Path, serve: Callable[[Path], Mirror], mnist_dir: Path
) -> None:
    data_dir = data_dir_with(tmp_path, mnist_dir, [n for n in ALL_NAMES if n != TEST_LABELS])
    good = serve(good_files)
    # A port that was just free: nothing listens there.
    probe = ThreadingHTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler)
    dead_port = probe.server_address[1]
    probe.server_close()

    ensure_mnist(data_dir, [f"http://127.0.0.1:{dead_port}/", good.url], timeout=10)

    assert good.requests == [f"/{TEST_LABELS}"]
    assert sorted(p.name for p in data_dir.iterdir()) == ALL_NAMES


def test_ensure_mnist_raises_dataset_error_naming_the_file_when_all_mirrors_fail(
    tmp_path: Path, corrupt_mirror_dir: Path, serve: Callable[[Path], Mirror], mnist_dir: Path
) -> None:
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    others = [n for n in ALL_NAMES if n != TEST_LABELS]
    data_dir = data_dir_with(tmp_path, mnist_dir, others)
    bad, missing = serve(corrupt_mirror_dir), serve(empty)

    with pytest.raises(DatasetError) as excinfo:
        ensure_mnist(data_dir, [bad.url, missing.url], timeout=30)

    message = str(excinfo.value)
    assert TEST_LABELS in message
    assert bad.url + TEST_LABELS in message
    assert missing.url + TEST_LABELS in message
    assert "404" in message
    # Nothing was left behind: still only the files that were there before.
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(others)


def test_ensure_mnist_does_not_download_files_already_present(
    tmp_path: Path, good_files: Path, serve: Callable[[Path], Mirror], mnist_dir: Path
) -> None:
    data_dir = data_dir_with(tmp_path, mnist_dir, ALL_NAMES)
    before = {p.name: p.stat().st_mtime_ns for p in data_dir.iterdir()}
    mirror = serve(good_files)

    ensure_mnist(data_dir, [mirror.url], timeout=30)

    assert mirror.requests == []
    assert {p.name: p.stat().st_mtime_ns for p in data_dir.iterdir()} == before


def test_ensure_mnist_downloads_only_the_missing_files(
    tmp_path: Path, good_files: Path, serve: Callable[[Path], Mirror], mnist_dir: Path
) -> None:
    present = [MNIST_FILES["train", "images"].name, MNIST_FILES["test", "images"].name]
    data_dir = data_dir_with(tmp_path, mnist_dir, present)
    mirror = serve(good_files)

    ensure_mnist(data_dir, [mirror.url], timeout=30)

    assert sorted(mirror.requests) == sorted(f"/{n}" for n in ALL_NAMES if n not in present)
    assert sorted(p.name for p in data_dir.iterdir()) == ALL_NAMES


def test_mnist_train_offline_ends_in_one_line_naming_mnist_data_dir(
    tmp_path: Path, serve: Callable[[Path], Mirror]
) -> None:
    """The README's first command without internet: every mirror 404s or refuses the connection."""
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    missing = serve(empty)
    probe = ThreadingHTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler)
    refused = f"http://127.0.0.1:{probe.server_address[1]}/"
    probe.server_close()

    result = run_cli("training.train", "--mirror", missing.url, "--mirror", refused, cwd=tmp_path)

    line = assert_one_line_error(result, "mnist-train", f"{missing.url}{FIRST_DOWNLOAD}: HTTP 404")
    assert f"{refused}{FIRST_DOWNLOAD}: " in line
    assert "set MNIST_DATA_DIR or --data-dir to a folder holding the four official MNIST .gz files" in line
    assert not (tmp_path / "models").exists()
    assert list((tmp_path / "data" / "mnist").iterdir()) == []  # no partial download left behind
