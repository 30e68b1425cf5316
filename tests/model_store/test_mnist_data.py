"""The strict IDX reader, on the real MNIST files and on crafted broken ones."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from model_store.mnist_data import (
    IMAGES_MAGIC,
    LABELS_MAGIC,
    MNIST_FILES,
    DatasetError,
    IdxFile,
    MnistSplit,
    load_split,
    read_idx,
)

# As the MNIST distribution publishes them.
TRAIN_CLASS_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

TEST_LABELS = MNIST_FILES["test", "labels"]
TEST_IMAGES = MNIST_FILES["test", "images"]


@pytest.fixture(scope="module")
def mnist_train(mnist_dir: Path) -> MnistSplit:
    return load_split(mnist_dir, "train")


@pytest.fixture(scope="module")
def mnist_test(mnist_dir: Path) -> MnistSplit:
    return load_split(mnist_dir, "test")


def labels_file(count: int, labels: bytes, magic: int = LABELS_MAGIC) -> bytes:
    return struct.pack(">II", magic, count) + labels


def images_header(count: int, rows: int = 28, cols: int = 28, magic: int = IMAGES_MAGIC) -> bytes:
    return struct.pack(">IIII", magic, count, rows, cols)


def write_gz(path: Path, raw: bytes) -> Path:
    path.write_bytes(gzip.compress(raw))
    return path


def read_broken(path: Path, spec: IdxFile = TEST_LABELS) -> str:
    """Read `path` as the given MNIST file, expecting a DatasetError naming it; return the message."""
    with pytest.raises(DatasetError) as excinfo:
        read_idx(path, spec)
    message = str(excinfo.value)
    assert str(path) in message
    return message


# --- the real files -------------------------------------------------------------------------------


def test_train_split_has_60000_images_of_28x28_uint8(mnist_train: MnistSplit) -> None:
    assert mnist_train.images.shape == (60_000, 28, 28)
    assert mnist_train.labels.shape == (60_000,)
    assert mnist_train.images.dtype == np.uint8
    assert mnist_train.labels.dtype == np.uint8


def test_test_split_has_10000_images_of_28x28_uint8(mnist_test: MnistSplit) -> None:
    assert mnist_test.images.shape == (10_000, 28, 28)
    assert mnist_test.labels.shape == (10_000,)
    assert mnist_test.images.dtype == np.uint8
    assert mnist_test.labels.dtype == np.uint8


def test_train_class_histogram_matches_readme(mnist_train: MnistSplit) -> None:
    assert np.bincount(mnist_train.labels, minlength=10).tolist() == TRAIN_CLASS_COUNTS


def test_test_class_histogram_matches_readme(mnist_test: MnistSplit) -> None:
    assert np.bincount(mnist_test.labels, minlength=10).tolist() == TEST_CLASS_COUNTS


def test_known_labels_train_0_is_5_and_test_128_is_8(mnist_train: MnistSplit, mnist_test: MnistSplit) -> None:
    assert mnist_train.labels[0] == 5
    assert mnist_test.labels[128] == 8


@pytest.mark.parametrize("split_name", ["train", "test"])
def test_pixels_span_0_to_255_with_dark_background(
    split_name: str, mnist_train: MnistSplit, mnist_test: MnistSplit
) -> None:
    images = mnist_train.images if split_name == "train" else mnist_test.images
    assert int(images.min()) == 0
    assert int(images.max()) == 255
    # MNIST polarity: mostly background (0) with bright ink; the top row is nearly all background.
    assert float(images[:, 0, :].mean()) < 1.0
    assert 20.0 < float(images.mean()) < 50.0


def test_load_split_without_checksum_gives_same_data(mnist_dir: Path, mnist_test: MnistSplit) -> None:
    unverified = load_split(mnist_dir, "test", verify_checksum=False)
    assert np.array_equal(unverified.images, mnist_test.images)
    assert np.array_equal(unverified.labels, mnist_test.labels)


# --- broken files ---------------------------------------------------------------------------------


def test_read_idx_rejects_missing_file(tmp_path: Path) -> None:
    message = read_broken(tmp_path / TEST_LABELS.name)
    assert "missing" in message


def test_load_split_rejects_missing_file_and_names_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as excinfo:
        load_split(tmp_path, "test")
    message = str(excinfo.value)
    assert str(tmp_path / TEST_IMAGES.name) in message
    assert "missing" in message


def test_read_idx_rejects_file_that_is_not_gzip(tmp_path: Path) -> None:
    path = tmp_path / TEST_LABELS.name
    path.write_bytes(labels_file(10_000, bytes(10_000)))  # the raw IDX content, uncompressed
    message = read_broken(path)
    assert "gzip" in message


def test_read_idx_rejects_truncated_gzip_stream(tmp_path: Path) -> None:
    path = tmp_path / TEST_LABELS.name
    compressed = gzip.compress(labels_file(10_000, bytes(range(10)) * 1000))
    path.write_bytes(compressed[: len(compressed) // 2])
    message = read_broken(path)
    assert "truncated" in message


def test_read_idx_rejects_wrong_magic(tmp_path: Path) -> None:
    # An images magic in a labels file.
    path = write_gz(tmp_path / TEST_LABELS.name, labels_file(10_000, bytes(10_000), magic=IMAGES_MAGIC))
    message = read_broken(path)
    assert "magic" in message
    assert str(IMAGES_MAGIC) in message
    assert str(LABELS_MAGIC) in message


def test_read_idx_rejects_wrong_item_count(tmp_path: Path) -> None:
    path = write_gz(tmp_path / TEST_LABELS.name, labels_file(9_999, bytes(9_999)))
    message = read_broken(path)
    assert "9999 items" in message
    assert "10000" in message


def test_read_idx_rejects_wrong_image_dimensions(tmp_path: Path) -> None:
    path = write_gz(
        tmp_path / TEST_IMAGES.name, images_header(10_000, rows=32, cols=32) + bytes(10_000 * 32 * 32)
    )
    message = read_broken(path, TEST_IMAGES)
    assert "32x32" in message
    assert "28x28" in message


def test_read_idx_rejects_truncated_header(tmp_path: Path) -> None:
    path = write_gz(tmp_path / TEST_IMAGES.name, images_header(10_000)[:12])
    message = read_broken(path, TEST_IMAGES)
    assert "truncated header" in message


def test_read_idx_rejects_truncated_payload(tmp_path: Path) -> None:
    path = write_gz(tmp_path / TEST_IMAGES.name, images_header(10_000) + bytes(784 * 9_999))
    message = read_broken(path, TEST_IMAGES)
    assert "truncated" in message
    assert str(TEST_IMAGES.expected_size) in message


def test_read_idx_rejects_padded_payload(tmp_path: Path) -> None:
    path = write_gz(tmp_path / TEST_LABELS.name, labels_file(10_000, bytes(10_001)))
    message = read_broken(path)
    assert "padded" in message


def test_read_idx_rejects_checksum_mismatch(tmp_path: Path, mnist_test: MnistSplit) -> None:
    # A valid header, the right size and labels 0-9, but not MNIST's bytes: two labels swapped.
    labels = mnist_test.labels.copy()
    first_differing = int(np.argmax(labels != labels[0]))
    labels[[0, first_differing]] = labels[[first_differing, 0]]
    path = write_gz(tmp_path / TEST_LABELS.name, labels_file(10_000, labels.tobytes()))
    message = read_broken(path)
    assert "checksum mismatch" in message
    assert TEST_LABELS.sha256 in message


def test_read_idx_rejects_label_above_9(tmp_path: Path) -> None:
    labels = bytearray(range(10)) * 1000
    labels[1234] = 12
    raw = labels_file(10_000, bytes(labels))
    path = write_gz(tmp_path / "labels.gz", raw)
    # With the checksum check on, the range check must still name the bad label.
    spec = IdxFile(path.name, LABELS_MAGIC, 10_000, hashlib.sha256(raw).hexdigest())
    with pytest.raises(DatasetError) as excinfo:
        read_idx(path, spec)
    message = str(excinfo.value)
    assert str(path) in message
    assert "label 12" in message
    assert "0-9" in message


def test_read_idx_rejects_label_above_9_without_checksum(tmp_path: Path) -> None:
    labels = bytearray(10_000)
    labels[-1] = 10
    path = write_gz(tmp_path / TEST_LABELS.name, labels_file(10_000, bytes(labels)))
    with pytest.raises(DatasetError) as excinfo:
        read_idx(path, TEST_LABELS, verify_checksum=False)
    assert str(path) in str(excinfo.value)
    assert "label 10" in str(excinfo.value)
