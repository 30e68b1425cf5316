"""KServe's own storage code (PyPI's kserve-storage, what its storage initializer runs), for copying
a store out of a bucket as a KServe pod would.

Its pins (google-cloud-storage, azure, huggingface-hub, ...) are not the service's, so it lives in a
folder of its own, installed without dependencies; of them `Storage.download` from S3 needs only
boto3, requests, certifi and PyYAML, which this environment has. It runs in a child process, as
in the initializer, with that folder on its path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

KSERVE_STORAGE_DIR = Path(os.environ.get("KSERVE_STORAGE_DIR", "/var/tmp/mnist-serve-kserve-storage"))
KSERVE_STORAGE_PACKAGE = "kserve-storage==0.21.0"
DOWNLOAD_TIMEOUT_SECONDS = 300

_DOWNLOAD = "import sys; from kserve_storage import Storage; Storage.download(sys.argv[1], sys.argv[2])"


def ensure_installed() -> None:
    """scripts/test.sh installs it; a test run alone installs it the same way."""
    if not (KSERVE_STORAGE_DIR / "kserve_storage" / "__init__.py").is_file():
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
        subprocess.run([*command, "--target", str(KSERVE_STORAGE_DIR), KSERVE_STORAGE_PACKAGE], check=True)


def download(uri: str, out_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`Storage.download(uri, out_dir)` in a child process with `env` (AWS_ENDPOINT_URL, keys...)."""
    ensure_installed()
    return subprocess.run(
        [sys.executable, "-c", _DOWNLOAD, uri, str(out_dir)],
        env=os.environ | env | {"PYTHONPATH": str(KSERVE_STORAGE_DIR)},
        capture_output=True,
        text=True,
        timeout=DOWNLOAD_TIMEOUT_SECONDS,
    )
