"""A model repository in TensorFlow Serving's layout: `<root>/<name>/<integer version>/`, in a
folder or in an S3 bucket (`root` = `s3://bucket/prefix`; `model_store.storage`).

A version is written into a local staging folder, then published atomically: renamed into place in
a folder, committed by a marker written last in a bucket. A reader sees either no version or a whole
one. The newest integer is the default version, unless the publish-time gate rejected it
(`ModelMetadata.gate`): a rejected version stays in the store, for its metadata, but is never the
default and never opened to serve.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from model_store.errors import (
    InvalidModelError,
    InvalidNameError,
    InvalidVersionError,
    ModelStoreError,
    NoModelError,
    RejectedVersionError,
    StoreUnavailableError,
)
from model_store.forward import INSTALL_KERAS_HINT, INT8_ONNX_FILE, ONNX_FILE, file_sha256, keras_installed
from model_store.metadata import METADATA_FILE, MODEL_FILE, ModelMetadata
from model_store.preprocessing import NUM_CLASSES
from model_store.storage import (
    TMP_PREFIX,
    FolderStorage,
    Storage,
    StoreLocation,
    is_bucket,
    parse_location,
)

if TYPE_CHECKING:
    import keras

# Relative to the working directory, like data/mnist: models never land inside installed code.
DEFAULT_STORE_ROOT = Path("models")
DEFAULT_MODEL_NAME = "mnist"
_TMP_PREFIX = TMP_PREFIX

__all__ = [
    "InvalidModelError",
    "InvalidNameError",
    "InvalidVersionError",
    "ModelStoreError",
    "NoModelError",
    "RejectedVersionError",
    "StoreUnavailableError",
]


@dataclass(frozen=True)
class LoadedModel:
    """A version's checked metadata and folder; its Keras model is read on first use."""

    metadata: ModelMetadata
    path: Path

    @cached_property
    def model(self) -> keras.Model:
        """The Keras model, loaded and checked against the metadata (InvalidModelError if it cannot
        be). Serving on ONNX Runtime never asks for it unless a request asks for integrated gradients,
        so such a process never imports TensorFlow: it starts in a fraction of the time and memory."""
        model_path = self.path / MODEL_FILE
        if not keras_installed():
            raise ModelStoreError(
                f"{model_path}: reading it needs Keras and TensorFlow; {INSTALL_KERAS_HINT}"
            )
        import keras  # deferred: listing versions or serving the export must not import TensorFlow

        try:
            model = keras.saving.load_model(model_path, compile=False)
        except Exception as exc:  # keras raises many types for a damaged archive
            raise InvalidModelError(f"{model_path}: cannot load model: {exc}") from exc
        validate_model_shapes(model, self.metadata, model_path)
        return model

    @property
    def version(self) -> int:
        return self.metadata.version

    @property
    def name(self) -> str:
        return self.metadata.name


def parse_version(text: str | int) -> int:
    """A version is a positive integer; anything else (paths included) is refused."""
    value = str(text)
    if not value.isdecimal() or int(value) < 1:
        raise InvalidVersionError(f"version must be a positive integer, got {value!r}")
    return int(value)


def check_model_name(name: str) -> str:
    """A model name is one folder name: not empty, no slash, not hidden."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise InvalidNameError(f"invalid model name {name!r}: use a plain folder name such as 'mnist'")
    return name


def default_cache(location: str, name: str) -> Path:
    """Where a bucket's versions are downloaded unless MNIST_MODEL_CACHE_DIR says: one folder per
    bucket prefix and model, shared by the workers and restarts of one machine."""
    digest = hashlib.sha256(f"{location}\0{name}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "mnist-model-cache" / digest


class ModelStore:
    def __init__(
        self,
        root: StoreLocation = DEFAULT_STORE_ROOT,
        name: str = DEFAULT_MODEL_NAME,
        cache_dir: Path | None = None,
    ) -> None:
        self.name = check_model_name(name)
        location = parse_location(root)
        self.storage: Storage
        if is_bucket(location):
            from model_store.bucket import BucketStorage  # deferred: only a bucket needs boto3

            self.root: StoreLocation = str(location)
            # The local folder a bucket's versions are read from.
            self.model_dir = cache_dir or default_cache(str(location), name)
            self.storage = BucketStorage(str(location), name, self.model_dir)
        else:
            self.root = Path(location)
            self.model_dir = self.root / name
            self.storage = FolderStorage(self.model_dir)
        self.location = self.storage.location

    def versions(self) -> list[int]:
        """Published versions, oldest first. Half-written versions and stray files are ignored."""
        return self.storage.versions()

    def rejection(self, version: int) -> str | None:
        """Why the gate rejected `version`, or None. Unreadable metadata is not a rejection: opening
        the version reports what is wrong with it."""
        try:
            return self.read_metadata(version).rejection
        except InvalidModelError:
            return None

    def servable_versions(self) -> list[int]:
        """Published versions the gate did not reject, oldest first."""
        return [version for version in self.versions() if self.rejection(version) is None]

    def resolve(self, version: int | str | None = None) -> int:
        """The pinned version if given (it must exist), else the newest one the gate did not reject."""
        available = self.versions()
        if version is not None:
            wanted = parse_version(version)
            if wanted not in available:
                raise NoModelError(
                    f"version {wanted} of model {self.name!r} not found in {self.location} "
                    f"(available: {available or 'none'})"
                )
            return wanted
        for newest in reversed(available):
            if self.rejection(newest) is None:
                return newest
        if available:
            raise NoModelError(
                f"every published version of model {self.name!r} in {self.location} was rejected by "
                f"its publish-time gate (versions {available})"
            )
        raise NoModelError(f"no published version of model {self.name!r} in {self.location}")

    def version_path(self, version: int) -> Path:
        """The version's folder; from a bucket, a local copy (downloaded when missing or stale)."""
        return self.storage.version_folder(parse_version(version))

    def describe(self, version: int) -> str:
        """Where the version lives: its folder or its place in the bucket."""
        return self.storage.describe(parse_version(version))

    def read_metadata(self, version: int) -> ModelMetadata:
        path = self.version_path(version) / METADATA_FILE
        try:
            metadata = ModelMetadata.model_validate_json(path.read_bytes())
        except FileNotFoundError as exc:
            raise InvalidModelError(f"{path}: metadata file is missing") from exc
        except ValidationError as exc:
            raise InvalidModelError(f"{path}: invalid metadata: {exc}") from exc
        if metadata.version != version or metadata.name != self.name:
            raise InvalidModelError(
                f"{path}: metadata names {metadata.name!r} version {metadata.version}, "
                f"but the folder is {self.name!r} version {version}"
            )
        return metadata

    def update_metadata(self, metadata: ModelMetadata) -> None:
        """Replace a published version's metadata.json atomically (a reader sees old or new, whole),
        with the files written into `version_path` beside it."""
        self.read_metadata(metadata.version)  # the version exists and is this model's
        _write_json_atomically(
            self.version_path(metadata.version) / METADATA_FILE, metadata.model_dump(mode="json")
        )
        self.storage.push(metadata.version)

    def open(self, version: int | str | None = None) -> LoadedModel:
        """A version whose metadata parses, that the gate did not reject, and whose model file exists;
        the model is not read yet."""
        resolved = self.resolve(version)
        path = self.version_path(resolved)
        metadata = self.read_metadata(resolved)
        if metadata.rejection is not None:
            raise RejectedVersionError(
                f"version {resolved} of model {self.name!r} was rejected at publish time and is never "
                f"served: {metadata.rejection}"
            )
        if not (path / MODEL_FILE).is_file():
            raise InvalidModelError(f"{path / MODEL_FILE}: model file is missing")
        return LoadedModel(metadata=metadata, path=path)

    def load(self, version: int | str | None = None) -> LoadedModel:
        """Load and validate a version: metadata parses, the model loads, shapes agree."""
        loaded = self.open(version)
        loaded.model  # noqa: B018 (read now, so that a broken model fails here)
        return loaded

    def check_writable(self) -> None:
        """Fail now, not after an hour of training, if a version could not be published here."""
        self.storage.check_writable()

    def clean_incomplete(self, older_than_seconds: float) -> list[str]:
        """Remove the half-written versions (a publisher that died) older than that."""
        return self.storage.clean_incomplete(older_than_seconds)

    def publish(self, write: Callable[[Path, int], ModelMetadata]) -> int:
        """Write a new version with `write(folder, version)` and publish it atomically.

        `write` fills the folder and returns the metadata it wrote. If another publisher takes the
        version number first, the version gets the next free number and its metadata is fixed.
        The store copies files, it converts none: the publisher writes the ONNX export into the
        folder (training does, `training.onnx_export.with_onnx_export`).
        """
        staging = self.storage.staging()
        try:
            version = max(self.versions(), default=0) + 1
            metadata = write(staging, version)

            def stamp(folder: Path, number: int) -> None:
                stamped = metadata.model_copy(update={"version": number})
                _write_json_atomically(folder / METADATA_FILE, stamped.model_dump(mode="json"))

            return self.storage.commit(staging, version, stamp)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)


def read_onnx(loaded: LoadedModel) -> bytes:
    """The version's ONNX export. LookupError says why there is none to serve."""
    export, path = loaded.metadata.onnx, _recorded(loaded, loaded.metadata.onnx, ONNX_FILE, "ONNX export")
    if export is None or file_sha256(loaded.path / MODEL_FILE) != export.model_sha256:
        raise LookupError(f"{path} was converted from other weights than {MODEL_FILE}'s")
    return path.read_bytes()


def read_int8(loaded: LoadedModel) -> bytes:
    """The version's int8 export. LookupError says why there is none to serve."""
    export, path = (
        loaded.metadata.int8,
        _recorded(loaded, loaded.metadata.int8, INT8_ONNX_FILE, "int8 export"),
    )
    content = path.read_bytes()
    # Quantized from one model.onnx: after a re-export from other weights it would answer for the old ones.
    onnx = loaded.path / ONNX_FILE
    if export is None or not onnx.is_file() or file_sha256(onnx) != export.onnx_sha256:
        raise LookupError(f"{path} was quantized from another {ONNX_FILE}")
    if hashlib.sha256(content).hexdigest() != export.sha256:
        raise LookupError(f"{path} is not the file its metadata records (SHA-256 differs)")
    return content


def _recorded(loaded: LoadedModel, export: object, name: str, what: str) -> Path:
    """The path of an export that the version's metadata records and its folder holds."""
    if export is None:
        raise LookupError(f"its metadata records no {what} (published before it, or it failed)")
    if not (loaded.path / name).is_file():
        raise LookupError(f"{loaded.path / name} is missing")
    return loaded.path / name


def validate_model_shapes(model: keras.Model, metadata: ModelMetadata, source: Path) -> None:
    input_shape = tuple(model.input_shape[1:])
    if input_shape != tuple(metadata.input.shape):
        raise InvalidModelError(
            f"{source}: model input shape {input_shape} disagrees with metadata {metadata.input.shape}"
        )
    if tuple(model.output_shape[1:]) != (NUM_CLASSES,):
        raise InvalidModelError(f"{source}: model output shape {model.output_shape} is not (None, 10)")


def _write_json_atomically(path: Path, content: object) -> None:
    tmp = path.with_name(f"{_TMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
    tmp.write_text(json.dumps(content, indent=2))
    os.replace(tmp, path)
