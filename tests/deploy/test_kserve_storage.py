"""The InferenceService's path: KServe's storage code copies the store out of the bucket into a
folder (as its storage initializer does for `storageUri`), and the service serves that folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from model_store.mnist_data import load_split
from model_store.storage import CLAIM_PREFIX, COMMIT_MARKER
from model_store.store import ModelStore
from tests.app.conftest import publish_copy
from tests.support.kserve_storage import download
from tests.support.s3 import S3Store

pytestmark = pytest.mark.slow


def test_kserve_storage_copies_the_bucket_into_a_folder_the_service_serves(
    s3_store: S3Store, trained_store: Path, mnist_dir: Path, tmp_path: Path
) -> None:
    publish_copy(s3_store.uri, source_root=trained_store)
    # A publisher still uploading version 2 when the pod starts: its claim and one file, no marker.
    client = s3_store.server.client()
    client.put_object(
        Bucket=s3_store.bucket, Key=f"store/mnist/2/{CLAIM_PREFIX}x", Body=b'{"claimed_by": "x"}'
    )
    client.put_object(Bucket=s3_store.bucket, Key="store/mnist/2/model.onnx", Body=b"half")
    copied = download(s3_store.uri, tmp_path / "mnt" / "models", s3_store.env())
    assert copied.returncode == 0, copied.stderr[-3000:]
    folder = tmp_path / "mnt" / "models"
    assert (folder / "mnist" / "1" / COMMIT_MARKER).is_file()
    assert (folder / "mnist" / "2" / f"{CLAIM_PREFIX}x").is_file()  # the copy keeps the claim...
    assert ModelStore(folder).versions() == [1]  # ...so the half-written version is not served
    with TestClient(create_app(Settings(model_store=folder, data_dir=mnist_dir))) as service:
        answer = service.get("/test/7").json()
    assert answer["model"]["version"] == 1
    assert answer["prediction"] == load_split(mnist_dir, "test").labels[7]
