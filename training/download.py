"""Fetch missing MNIST files from mirrors; nothing lands in the data folder before it is verified."""

from __future__ import annotations

import gzip
import logging
import os
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import httpx

from model_store.mnist_data import MNIST_FILES, DatasetError, IdxFile, parse_idx

log = logging.getLogger(__name__)

DEFAULT_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


def ensure_mnist(data_dir: Path, mirrors: Sequence[str] = DEFAULT_MIRRORS, timeout: float = 60.0) -> None:
    """Download every MNIST file missing from `data_dir`, trying mirrors in order."""
    missing = [spec for spec in MNIST_FILES.values() if not (data_dir / spec.name).exists()]
    if not missing:
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    for spec in missing:
        download_file(spec, data_dir, mirrors, timeout)


def download_file(spec: IdxFile, data_dir: Path, mirrors: Sequence[str], timeout: float) -> Path:
    """Download one file, verify its content, then rename it into place."""
    failures: list[str] = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + spec.name
        log.info("downloading %s", url)
        fd, tmp_name = tempfile.mkstemp(dir=data_dir, prefix=f".{spec.name}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            with (
                os.fdopen(fd, "wb") as out,
                httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as response,
            ):
                response.raise_for_status()
                for chunk in response.iter_bytes():
                    out.write(chunk)
            parse_idx(gzip.decompress(tmp.read_bytes()), spec, url)
            target = data_dir / spec.name
            os.replace(tmp, target)
            return target
        except (httpx.HTTPError, DatasetError, OSError, EOFError, zlib.error) as exc:
            failures.append(f"{url}: {brief(exc)}")
            log.warning("mirror failed: %s: %s", url, brief(exc))
        finally:
            tmp.unlink(missing_ok=True)
    raise DatasetError(f"{spec.name}: could not download a valid copy; tried " + "; ".join(failures))


def brief(exc: Exception) -> str:
    """The first line of an error (httpx adds a line of advice to HTTP errors), or its type if it is blank."""
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code} {exc.response.reason_phrase}"
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
