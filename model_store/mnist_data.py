"""The four MNIST IDX files: their names, checksums, and a strict reader.

Training reads all four; the service reads the test split for `/test/...`. Every failure names the
file and what is wrong with it.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from model_store.preprocessing import IMAGE_SIDE

Split = Literal["train", "test"]
IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049


@dataclass(frozen=True)
class IdxFile:
    name: str
    magic: int
    count: int
    sha256: str  # of the decompressed content

    @property
    def expected_size(self) -> int:
        if self.magic == IMAGES_MAGIC:
            return 16 + self.count * IMAGE_SIDE * IMAGE_SIDE
        return 8 + self.count


MNIST_FILES: dict[tuple[Split, str], IdxFile] = {
    ("train", "images"): IdxFile(
        "train-images-idx3-ubyte.gz",
        IMAGES_MAGIC,
        60_000,
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    ("train", "labels"): IdxFile(
        "train-labels-idx1-ubyte.gz",
        LABELS_MAGIC,
        60_000,
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    ("test", "images"): IdxFile(
        "t10k-images-idx3-ubyte.gz",
        IMAGES_MAGIC,
        10_000,
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    ("test", "labels"): IdxFile(
        "t10k-labels-idx1-ubyte.gz",
        LABELS_MAGIC,
        10_000,
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
}


class DatasetError(Exception):
    """A data file is missing or not what MNIST's is; the message names the file."""


@dataclass(frozen=True)
class MnistSplit:
    images: np.ndarray  # (N, 28, 28) uint8, 0 = background, 255 = ink
    labels: np.ndarray  # (N,) uint8, 0-9


def read_idx(path: Path, spec: IdxFile, verify_checksum: bool = True) -> np.ndarray:
    """Read one IDX `.gz` file, checking size, magic, dimensions and (optionally) its checksum."""
    if not path.is_file():
        raise DatasetError(f"{path}: file is missing")
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: not a valid gzip file or truncated ({exc})") from exc
    return parse_idx(raw, spec, str(path), verify_checksum)


def parse_idx(raw: bytes, spec: IdxFile, source: str, verify_checksum: bool = True) -> np.ndarray:
    header_size = 16 if spec.magic == IMAGES_MAGIC else 8
    if len(raw) < header_size:
        raise DatasetError(f"{source}: truncated header ({len(raw)} bytes)")
    magic, count = struct.unpack(">II", raw[:8])
    if magic != spec.magic:
        raise DatasetError(f"{source}: wrong magic number {magic}, expected {spec.magic}")
    if count != spec.count:
        raise DatasetError(f"{source}: header says {count} items, expected {spec.count}")
    if spec.magic == IMAGES_MAGIC:
        rows, cols = struct.unpack(">II", raw[8:16])
        if (rows, cols) != (IMAGE_SIDE, IMAGE_SIDE):
            raise DatasetError(f"{source}: images are {rows}x{cols}, expected 28x28")
    if len(raw) != spec.expected_size:
        raise DatasetError(f"{source}: truncated or padded: {len(raw)} bytes, expected {spec.expected_size}")
    if verify_checksum:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != spec.sha256:
            raise DatasetError(f"{source}: checksum mismatch: sha256 {digest}, expected {spec.sha256}")
    data = np.frombuffer(raw, dtype=np.uint8, offset=header_size)
    if spec.magic == IMAGES_MAGIC:
        return data.reshape(spec.count, IMAGE_SIDE, IMAGE_SIDE)
    if data.max() > 9:
        raise DatasetError(f"{source}: label {int(data.max())} is outside 0-9")
    return data


def load_split(data_dir: Path, split: Split, verify_checksum: bool = True) -> MnistSplit:
    """Load one split from `data_dir`, verified."""
    images, labels = (
        read_idx(data_dir / MNIST_FILES[split, kind].name, MNIST_FILES[split, kind], verify_checksum)
        for kind in ("images", "labels")
    )
    return MnistSplit(images=images, labels=labels)
