"""The store in an S3 bucket, against a real S3 server (rclone) that the tests start: publication,
racing publishers, half-written versions and their cleaning, and the same rule in a folder copy."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from model_store.errors import InvalidLocationError
from model_store.metadata import MODEL_FILE
from model_store.settings import StoreSettings
from model_store.storage import CLAIM_PREFIX, COMMIT_MARKER, parse_location
from model_store.store import ModelStore, NoModelError
from tests.app.conftest import publish_copy
from tests.conftest import run_cli
from tests.support.paths import REPO_ROOT
from tests.support.s3 import S3Store

PUBLISHERS = 4


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_s3_uri_stays_a_uri_and_anything_else_is_a_folder() -> None:
    assert parse_location("s3://mnist-models/store/") == "s3://mnist-models/store"
    assert parse_location("models") == Path("models")
    with pytest.raises(InvalidLocationError, match="s3://BUCKET"):
        parse_location("s3:///store")


def test_the_setting_reads_a_bucket_uri_without_folding_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNIST_MODEL_STORE", "s3://mnist-models/store")
    assert StoreSettings().model_store == "s3://mnist-models/store"
    monkeypatch.setenv("MNIST_MODEL_STORE", "/srv/models")
    assert StoreSettings().model_store == Path("/srv/models")


def test_a_folder_copied_from_a_bucket_ignores_a_half_uploaded_version(tmp_path: Path) -> None:
    model_dir = tmp_path / "mnist"
    for version in ("1", "2", "3"):
        (model_dir / version).mkdir(parents=True)
    (model_dir / "2" / f"{CLAIM_PREFIX}abc").touch()  # a publisher's claim, and no marker: half-written
    (model_dir / "3" / f"{CLAIM_PREFIX}def").touch()
    (model_dir / "3" / COMMIT_MARKER).touch()  # copied after the marker, before the claim was dropped
    store = ModelStore(tmp_path)
    assert store.versions() == [1, 3]
    assert store.clean_incomplete(older_than_seconds=0) == [str(model_dir / "2")]
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "3"]


@pytest.mark.slow
def test_a_version_published_to_a_bucket_is_read_back_whole(
    s3_store: S3Store, trained_store: Path, tmp_path: Path
) -> None:
    assert publish_copy(s3_store.uri, source_root=trained_store) == 1
    keys = s3_store.objects("mnist/1/")
    assert f"store/mnist/1/{COMMIT_MARKER}" in keys
    assert not [key for key in keys if CLAIM_PREFIX in key]  # the claim is dropped once committed
    store = ModelStore(s3_store.uri, cache_dir=tmp_path / "cache")
    assert store.versions() == [1]
    loaded = store.load()  # the Keras model reads and matches its metadata
    assert loaded.path.is_relative_to(tmp_path / "cache")
    source = ModelStore(trained_store).version_path(1)
    for item in source.iterdir():
        if item.is_file() and item.name != "metadata.json":
            assert digest(loaded.path / item.name) == digest(item), item.name
    assert loaded.metadata.version == 1


@pytest.mark.slow
def test_mnist_train_publishes_to_a_bucket(s3_store: S3Store, mnist_dir: Path, tmp_path: Path) -> None:
    args = ["--preset", "seed", "--limit", "1000", "--epochs", "1", "--seed", "3", "--no-download"]
    args += ["--store", s3_store.uri, "--data-dir", str(mnist_dir), "--verbose", "0"]
    trained = run_cli("training.train", *args, cwd=tmp_path, env=s3_store.env())
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert f"published {s3_store.uri}/mnist/1/" in trained.stdout
    listed = run_cli("model_store", "--store", s3_store.uri, "versions", cwd=tmp_path, env=s3_store.env())
    assert listed.returncode == 0 and listed.stdout == "1\n", listed.stderr
    store = ModelStore(s3_store.uri, cache_dir=tmp_path / "cache")
    assert (store.open().path / MODEL_FILE).is_file()
    assert store.read_metadata(1).training.preset == "seed"


@pytest.mark.slow
def test_racing_publishers_never_share_a_version(s3_store: S3Store, trained_store: Path) -> None:
    start = threading.Barrier(PUBLISHERS)
    published: list[int] = []

    def publish() -> None:
        start.wait()  # every publisher sees an empty bucket and tries version 1
        published.append(publish_copy(s3_store.uri, source_root=trained_store))

    threads = [threading.Thread(target=publish) for _ in range(PUBLISHERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(published) == list(range(1, PUBLISHERS + 1))
    store = ModelStore(s3_store.uri)
    assert store.versions() == sorted(published)
    for version in published:
        assert store.read_metadata(version).version == version
    assert not [key for key in s3_store.objects() if CLAIM_PREFIX in key]


@pytest.mark.slow
def test_a_half_uploaded_version_is_ignored_then_cleaned(
    s3_store: S3Store, trained_store: Path, tmp_path: Path
) -> None:
    publish_copy(s3_store.uri, source_root=trained_store)
    # A publisher that died at version 2: its claim and one file, never the marker.
    client = s3_store.server.client()
    client.put_object(Bucket=s3_store.bucket, Key=f"store/mnist/2/{CLAIM_PREFIX}dead", Body=b"")
    client.put_object(Bucket=s3_store.bucket, Key="store/mnist/2/model.onnx", Body=b"half")
    store = ModelStore(s3_store.uri)
    assert store.versions() == [1]
    assert store.resolve() == 1
    with pytest.raises(NoModelError, match="not found"):
        store.open(2)
    assert publish_copy(s3_store.uri, source_root=trained_store) == 3  # the dead claim keeps 2

    def clean(*args: str) -> str:
        result = run_cli(
            "model_store",
            "--store",
            s3_store.uri,
            "clean-incomplete",
            *args,
            cwd=tmp_path,
            env=s3_store.env(),
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert clean() == ""  # younger than an hour: it might be a publish in progress
    assert clean("--older-than", "0") == f"removed {s3_store.uri}/mnist/2/\n"
    assert s3_store.objects("mnist/2/") == []
    assert store.versions() == [1, 3]


def test_clean_incomplete_refuses_a_negative_age(tmp_path: Path) -> None:
    result = run_cli(
        "model_store", "--store", str(tmp_path), "clean-incomplete", "--older-than", "-1", cwd=REPO_ROOT
    )
    assert result.returncode == 2 and "not a number of seconds" in result.stderr
