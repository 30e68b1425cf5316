"""Where a model's versions live: a local folder, or a prefix in an S3 bucket (`model_store.bucket`).

`ModelStore` speaks to one `Storage` and keeps the contract (names, versions, metadata) itself; a
storage only lists published versions, hands out a version's files as a local folder (the runtimes
need files), publishes a staged folder atomically, and keeps the operator's small choice files.

The atomicity rule is the same in both: a reader never sees a version that is not whole. A folder
is renamed into place (rename(2) refuses a non-empty target); a bucket has no rename, so a version
counts only once its commit marker, written last, exists (`model_store.bucket`).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from model_store.errors import InvalidLocationError, ModelStoreError

S3_SCHEME = "s3://"
# Written last into a version published to a bucket; a copy of the bucket (KServe's storage
# initializer, `aws s3 sync`) carries it into a folder, where it means the same.
COMMIT_MARKER = ".committed"
# A publisher's claim on a version number in a bucket; a folder copied from a bucket that holds one
# without the marker is a half-uploaded version.
CLAIM_PREFIX = ".claim-"
TMP_PREFIX = ".tmp-"

StoreLocation = Path | str
# Rewrites the staged version's metadata for the number it finally gets.
Stamp = Callable[[Path, int], None]


class Storage(Protocol):
    """One model's versions and choice files, in a folder or a bucket."""

    location: str

    def versions(self) -> list[int]:
        """Published versions, oldest first: whole ones only."""
        ...

    def version_folder(self, version: int) -> Path:
        """A local folder holding the version's files (a bucket's are downloaded into a cache)."""
        ...

    def describe(self, version: int) -> str:
        """Where the version lives, for messages."""
        ...

    def staging(self) -> Path:
        """A fresh local folder to write a new version into."""
        ...

    def commit(self, staging: Path, version: int, stamp: Stamp) -> int:
        """Publish the staged folder under `version`, or the next free number if another publisher
        took it first (`stamp` rewrites the metadata for that number). Returns the number."""
        ...

    def push(self, version: int) -> None:
        """Make the changes written into `version_folder(version)` visible to readers."""
        ...

    def check_writable(self) -> None: ...

    def read_choice(self, name: str) -> bytes | None: ...

    def write_choice(self, name: str, content: bytes) -> None: ...

    def delete_choice(self, name: str) -> None: ...

    def clean_incomplete(self, older_than_seconds: float) -> list[str]:
        """Remove half-written versions older than that; returns what was removed."""
        ...


def is_bucket(location: StoreLocation) -> bool:
    return isinstance(location, str) and location.startswith(S3_SCHEME)


def parse_location(text: str | Path) -> StoreLocation:
    """`s3://bucket[/prefix]` stays a URI (a path would fold its `//`); anything else is a folder."""
    if isinstance(text, str) and text.startswith(S3_SCHEME):
        bucket = text.removeprefix(S3_SCHEME).split("/", 1)[0]
        if not bucket:
            raise InvalidLocationError(f"{text}: an S3 store is s3://BUCKET or s3://BUCKET/PREFIX")
        return text.rstrip("/")
    return Path(text)


def is_version_name(name: str) -> bool:
    return name.isascii() and name.isdecimal() and str(int(name)) == name and int(name) >= 1


class FolderStorage:
    """`<root>/<name>/<version>/` on a local or mounted filesystem."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self.location = str(model_dir)

    def versions(self) -> list[int]:
        if not self.model_dir.is_dir():
            return []
        # Only canonical names ("7", not "07" or non-ASCII digits): version_folder(v) must find them.
        return sorted(
            int(p.name) for p in self.model_dir.iterdir() if is_version_name(p.name) and _is_whole(p)
        )

    def version_folder(self, version: int) -> Path:
        return self.model_dir / str(version)

    def describe(self, version: int) -> str:
        return str(self.version_folder(version))

    def staging(self) -> Path:
        # Beside the versions, so that the final rename stays on one filesystem.
        self.model_dir.mkdir(parents=True, exist_ok=True)
        staging = self.model_dir / f"{TMP_PREFIX}{uuid.uuid4().hex}"
        staging.mkdir()
        return staging

    def commit(self, staging: Path, version: int, stamp: Stamp) -> int:
        while True:
            stamp(staging, version)
            try:
                # rename(2) refuses a non-empty target, so two publishers never share a number.
                os.rename(staging, self.version_folder(version))
                return version
            except OSError:
                if not self.version_folder(version).exists():
                    raise
                version = max(self.versions(), default=version) + 1

    def push(self, version: int) -> None:
        """Written in place already, each file atomically."""

    def check_writable(self) -> None:
        existing = self.model_dir
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise ModelStoreError(
                f"{existing} is a file, so the model store {self.model_dir} cannot be created"
            )
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ModelStoreError(
                f"{existing} is not writable, so no version can be published in {self.model_dir.parent}"
            )

    def read_choice(self, name: str) -> bytes | None:
        try:
            return (self.model_dir / name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ModelStoreError(f"{self.model_dir / name}: unreadable ({exc})") from exc

    def write_choice(self, name: str, content: bytes) -> None:
        """Atomically: readers see the old file or the new one, never a part."""
        path = self.model_dir / name
        staging = path.with_name(f".{name}.{uuid.uuid4().hex}")
        try:
            staging.write_bytes(content)
            os.replace(staging, path)
        except OSError as exc:
            staging.unlink(missing_ok=True)
            raise ModelStoreError(f"cannot write {path}: {exc}") from exc

    def delete_choice(self, name: str) -> None:
        try:
            (self.model_dir / name).unlink(missing_ok=True)
        except OSError as exc:
            raise ModelStoreError(f"cannot remove {self.model_dir / name}: {exc}") from exc

    def clean_incomplete(self, older_than_seconds: float) -> list[str]:
        if not self.model_dir.is_dir():
            return []
        cutoff = time.time() - older_than_seconds
        removed = []
        for path in sorted(self.model_dir.iterdir()):
            half = path.name.startswith(TMP_PREFIX) or (is_version_name(path.name) and not _is_whole(path))
            if path.is_dir() and half and path.stat().st_mtime <= cutoff:
                shutil.rmtree(path)
                removed.append(str(path))
        return removed


def _is_whole(version_dir: Path) -> bool:
    """A renamed folder is whole; one copied from a bucket is whole once it holds the marker."""
    if not version_dir.is_dir():
        return False
    if (version_dir / COMMIT_MARKER).exists():
        return True
    return not any(p.name.startswith(CLAIM_PREFIX) for p in version_dir.iterdir())
