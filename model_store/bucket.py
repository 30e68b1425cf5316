"""A model's versions under a prefix in an S3 bucket: AWS S3, Google Cloud Storage through its
S3-interoperable endpoint, or any S3-compatible server, through boto3.

The layout is the folder's: `<prefix>/<name>/<version>/<file>`, `<prefix>/<name>/pin.json`. S3 has
no rename, and a conditional write (`If-None-Match: *`) is not honoured everywhere (rclone's S3
server accepts the header and overwrites), so publication rests only on what every S3 offers,
strong read-after-write consistency of writes and listings:

1. claim: a publisher writes `<version>/.claim-<random>`, then lists `<version>/`. The number is
   its own only if its claim is the only object there; else it deletes its claim and tries the next
   number. Of two racing publishers the one that lists later sees the other's claim, so they never
   both win (both may lose, and retry after a random pause).
2. upload the files, then the commit marker `<version>/.committed` (naming them) last, then drop
   the claim. Readers list, and load, only versions whose marker exists.

A publisher that dies leaves a claim without a marker: never served, and removed by
`python -m model_store clean-incomplete`. Reading a version downloads its files into a local cache
folder (ONNX Runtime and Keras read files), again only when its marker changes.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from model_store.errors import InvalidModelError, NoModelError, StoreUnavailableError
from model_store.storage import CLAIM_PREFIX, COMMIT_MARKER, S3_SCHEME, TMP_PREFIX, Stamp, is_version_name

# Few and quick: a service that cannot reach its store says so at startup and its poller looks again
# later, rather than hanging on a dead endpoint.
CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 30
MAX_ATTEMPTS = 3
CREDENTIALS_HINT = "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
CLAIM_RETRY_PAUSE_SECONDS = 0.2
_ACCESS_REFUSED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken"}


@dataclass
class _VersionObjects:
    """What a listing found under one version's prefix."""

    committed: bool = False
    keys: list[str] = field(default_factory=list)
    newest_change: datetime | None = None


class BucketStorage:
    """`s3://<bucket>/<prefix>/<name>/`, with the versions read through a local `cache` folder."""

    def __init__(self, uri: str, name: str, cache: Path) -> None:
        bucket, _, prefix = uri.removeprefix(S3_SCHEME).partition("/")
        self.bucket = bucket
        self.base = f"{prefix.strip('/')}/{name}/".lstrip("/")
        self.location = f"{S3_SCHEME}{bucket}/{self.base}"
        self.cache = cache

    @cached_property
    def client(self) -> Any:  # botocore builds its clients' types at run time
        import boto3  # deferred: a store in a folder never loads botocore
        from botocore.config import Config

        # The endpoint comes from AWS_ENDPOINT_URL, the credentials from the standard AWS variables
        # or files, as for any AWS tool.
        config = Config(
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
            retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        )
        # A session of its own: boto3's default session is not safe to share between threads.
        return boto3.session.Session().client("s3", config=config)

    @contextmanager
    def _reaching(self, doing: str) -> Iterator[None]:
        """botocore's many errors become one line naming the store, what failed and what to do."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code", "?")
            hint = ""
            if code in _ACCESS_REFUSED:
                hint = f"; {CREDENTIALS_HINT}"
            elif code == "NoSuchBucket":
                hint = f"; create the bucket {self.bucket!r} or fix MNIST_MODEL_STORE"
            message = f"{self.location}: cannot {doing}: {code}: {error.get('Message', exc)}{hint}"
            raise StoreUnavailableError(message) from exc
        except NoCredentialsError as exc:
            raise StoreUnavailableError(
                f"{self.location}: cannot {doing}: {exc}; {CREDENTIALS_HINT}"
            ) from exc
        except BotoCoreError as exc:
            message = f"{self.location}: cannot {doing}: {exc} (AWS_ENDPOINT_URL names the endpoint)"
            raise StoreUnavailableError(message) from exc

    def _list(self, prefix: str) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            yield from page.get("Contents", [])

    def _listing(self) -> dict[int, _VersionObjects]:
        found: dict[int, _VersionObjects] = {}
        with self._reaching("list the versions"):
            for obj in self._list(self.base):
                folder, slash, file = obj["Key"].removeprefix(self.base).partition("/")
                if not slash or not is_version_name(folder):
                    continue
                entry = found.setdefault(int(folder), _VersionObjects())
                entry.keys.append(obj["Key"])
                entry.committed |= file == COMMIT_MARKER
                changed = obj["LastModified"]
                entry.newest_change = max(changed, entry.newest_change or changed)
        return found

    def versions(self) -> list[int]:
        return sorted(version for version, objects in self._listing().items() if objects.committed)

    def _key(self, version: int, file: str = "") -> str:
        return f"{self.base}{version}/{file}"

    def describe(self, version: int) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self._key(version)}"

    def _get(self, key: str, doing: str) -> bytes | None:
        with self._reaching(doing):
            try:
                return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except self.client.exceptions.NoSuchKey:
                return None

    def version_folder(self, version: int) -> Path:
        marker = self._get(self._key(version, COMMIT_MARKER), f"read version {version}")
        if marker is None:
            raise NoModelError(f"{self.describe(version)} has no commit marker: not a published version")
        target = self.cache / str(version)
        if (target / COMMIT_MARKER).is_file() and (target / COMMIT_MARKER).read_bytes() == marker:
            return target
        self.cache.mkdir(parents=True, exist_ok=True)
        download = self.cache / f"{TMP_PREFIX}{uuid.uuid4().hex}"
        download.mkdir()
        try:
            self._download(version, marker, download)
            _move_into_place(download, target, marker)
        finally:
            shutil.rmtree(download, ignore_errors=True)
        return target

    def _download(self, version: int, marker: bytes, folder: Path) -> None:
        try:
            files: dict[str, int] = json.loads(marker)["files"]
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidModelError(f"{self.describe(version)}{COMMIT_MARKER}: unreadable ({exc})") from exc
        with self._reaching(f"download version {version}"):
            for file, size in files.items():
                if not _is_payload_name(file):
                    raise InvalidModelError(f"{self.describe(version)}{COMMIT_MARKER} names {file!r}")
                (folder / file).parent.mkdir(parents=True, exist_ok=True)
                self.client.download_file(self.bucket, self._key(version, file), str(folder / file))
                if (folder / file).stat().st_size != size:
                    raise InvalidModelError(f"{self.describe(version)}{file} is not the size its marker says")
        (folder / COMMIT_MARKER).write_bytes(marker)

    def staging(self) -> Path:
        self.cache.mkdir(parents=True, exist_ok=True)
        staging = self.cache / f"{TMP_PREFIX}{uuid.uuid4().hex}"
        staging.mkdir()
        return staging

    def commit(self, staging: Path, version: int, stamp: Stamp) -> int:
        listing = self._listing()
        version = max(version, max(listing, default=0) + 1)
        claim = self._key(version, f"{CLAIM_PREFIX}{uuid.uuid4().hex}")
        while not self._claim(version, claim):
            time.sleep(random.uniform(0, CLAIM_RETRY_PAUSE_SECONDS))  # two losers do not meet again
            version = max(version, max(self._listing(), default=0)) + 1
            claim = self._key(version, f"{CLAIM_PREFIX}{uuid.uuid4().hex}")
        stamp(staging, version)
        self._upload(version, staging)
        with self._reaching(f"finish version {version}"):
            self.client.delete_object(Bucket=self.bucket, Key=claim)
        return version

    def _claim(self, version: int, claim: str) -> bool:
        with self._reaching(f"claim version {version}"):
            # Not empty: copiers such as KServe's storage initializer skip empty objects, and a copy
            # must keep the claim to tell a half-written version (`model_store.storage`).
            self.client.put_object(Bucket=self.bucket, Key=claim, Body=_claim_body())
            others = [obj["Key"] for obj in self._list(self._key(version)) if obj["Key"] != claim]
            if others:
                self.client.delete_object(Bucket=self.bucket, Key=claim)
        return not others

    def _upload(self, version: int, folder: Path) -> None:
        """Every file, then the marker naming them: readers see the version only when it is whole."""
        # Every file, SavedModel's subfolders included; hidden ones (markers, staging) are no payload.
        files = {
            path.relative_to(folder).as_posix(): path.stat().st_size
            for path in sorted(folder.rglob("*"))
            if path.is_file() and _is_payload_name(path.relative_to(folder).as_posix())
        }
        with self._reaching(f"upload version {version}"):
            for file in files:
                self.client.upload_file(str(folder / file), self.bucket, self._key(version, file))
            marker = json.dumps({"version": version, "files": files}, indent=2).encode()
            self.client.put_object(Bucket=self.bucket, Key=self._key(version, COMMIT_MARKER), Body=marker)
        (folder / COMMIT_MARKER).write_bytes(marker)

    def push(self, version: int) -> None:
        self._upload(version, self.cache / str(version))

    def check_writable(self) -> None:
        probe = f"{self.base}{TMP_PREFIX}write-check-{uuid.uuid4().hex}"
        with self._reaching("write to the store"):
            self.client.put_object(Bucket=self.bucket, Key=probe, Body=b"")
            self.client.delete_object(Bucket=self.bucket, Key=probe)

    def read_choice(self, name: str) -> bytes | None:
        return self._get(f"{self.base}{name}", f"read {name}")

    def write_choice(self, name: str, content: bytes) -> None:
        # One PUT replaces an object whole: readers get the old one or the new one.
        with self._reaching(f"write {name}"):
            self.client.put_object(Bucket=self.bucket, Key=f"{self.base}{name}", Body=content)

    def delete_choice(self, name: str) -> None:
        with self._reaching(f"delete {name}"):
            self.client.delete_object(Bucket=self.bucket, Key=f"{self.base}{name}")

    def clean_incomplete(self, older_than_seconds: float) -> list[str]:
        removed = []
        for version, objects in sorted(self._listing().items()):
            changed = objects.newest_change
            if objects.committed or (changed and time.time() - changed.timestamp() < older_than_seconds):
                continue
            with self._reaching(f"remove the half-written version {version}"):
                for key in objects.keys:
                    self.client.delete_object(Bucket=self.bucket, Key=key)
            removed.append(self.describe(version))
        return removed


def _claim_body() -> bytes:
    """Who claimed a version and when, for an operator looking at a half-written one."""
    by = f"{socket.gethostname()}:{os.getpid()}"
    return json.dumps({"claimed_by": by, "claimed_at": datetime.now(UTC).isoformat()}).encode()


def _is_payload_name(relative: str) -> bool:
    """A file of the version: a relative path of plain names (so no `..`), none of them hidden."""
    return bool(relative) and all(part and not part.startswith(".") for part in relative.split("/"))


def _move_into_place(download: Path, target: Path, marker: bytes) -> None:
    """The downloaded copy becomes the cached one; another process of the same cache may race us."""
    if target.exists():
        stale = target.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}")
        with contextlib.suppress(FileNotFoundError):  # another process moved it first
            target.rename(stale)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        download.rename(target)
    except OSError:
        if (target / COMMIT_MARKER).read_bytes() != marker:
            raise
