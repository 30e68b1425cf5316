"""The client's prediction ids and feedback against a real uvicorn with the prediction log on (and
gRPC), on the fixture store; and what `import mnist_client` brings into a process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mnist_client import AsyncClient, Client, MnistServeError
from model_store.mnist_data import MnistSplit
from tests.app.conftest import encode
from tests.app.grpc.conftest import GrpcServer, grpc_server
from tests.support.live_server import REPO_ROOT

EIGHT = 128  # test image 128 is an 8
SERVER_ONLY = ("sqlalchemy", "cv2", "onnxruntime", "fastapi")


@pytest.fixture(scope="module")
def logged(
    fixture_store: Path, mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GrpcServer]:
    folder = tmp_path_factory.mktemp("logged")
    settings = {"prediction_log": "on", "database_url": f"sqlite:///{folder / 'log.db'}"}
    with grpc_server(fixture_store, mnist_dir, folder / "server.log", settings=settings) as server:
        yield server


@pytest.mark.e2e
def test_answers_carry_ids_and_feedback_is_recorded(logged: GrpcServer, test_split: MnistSplit) -> None:
    with Client(logged.http.url) as client:
        answer = client.predict(test_split.images[EIGHT])
        assert answer.prediction_id is not None and len(answer.prediction_id) == 32
        batch = client.predict_batch(test_split.images[:3])
        assert len({p.prediction_id for p in [answer, *batch]} - {None}) == 4
        wrong = (answer.digit + 1) % 10
        recorded = client.feedback(answer.prediction_id, wrong)
        assert (recorded["label"], recorded["predicted"], recorded["correct"]) == (wrong, answer.digit, False)
        assert recorded["model"]["version"] == answer.model_version
        again = client.feedback(answer.prediction_id, "not_a_digit")  # replaces the label
        assert again["label"] == "not_a_digit" and again["created_at"] == recorded["created_at"]
        with pytest.raises(MnistServeError) as unknown:
            client.feedback("0" * 32, 3)
        assert unknown.value.status == 404
        with pytest.raises(MnistServeError) as refused:
            client.feedback(answer.prediction_id, 12)  # type: ignore[arg-type]
        assert refused.value.status == 422


@pytest.mark.e2e
def test_async_client_gives_feedback_too(logged: GrpcServer, test_split: MnistSplit) -> None:
    async def run() -> dict[str, object]:
        async with AsyncClient(logged.http.url) as client:
            answer = await client.predict(test_split.images[EIGHT])
            assert answer.prediction_id is not None
            return await client.feedback(answer.prediction_id, int(test_split.labels[EIGHT]))

    assert asyncio.run(run())["correct"] is True


@pytest.mark.e2e
def test_grpc_answers_carry_ids_and_feedback_goes_over_http(
    logged: GrpcServer, test_split: MnistSplit
) -> None:
    with Client(f"grpc://{logged.target}") as over_grpc:
        answers = over_grpc.predict_batch(test_split.images[:2])
        assert all(answer.prediction_id is not None for answer in answers)
        assert len({answer.prediction_id for answer in answers}) == 2
        with pytest.raises(NotImplementedError, match="http://"):
            over_grpc.feedback(str(answers[0].prediction_id), 7)
    with Client(logged.http.url) as over_http:
        assert over_http.feedback(str(answers[0].prediction_id), int(test_split.labels[0]))["correct"] is True


@pytest.mark.e2e
def test_mnist_predict_json_gives_each_answer_id(
    logged: GrpcServer, tmp_path: Path, test_split: MnistSplit
) -> None:
    picture = tmp_path / "eight.png"
    picture.write_bytes(encode(test_split.images[EIGHT]))
    command = [sys.executable, "-m", "mnist_client.cli", "--url", logged.http.url, "--json", str(picture)]
    shown = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    (row,) = json.loads(shown.stdout)
    assert len(row["prediction_id"]) == 32


def test_import_mnist_client_leaves_the_server_libraries_out() -> None:
    probe = f"import sys, mnist_client; print([m for m in {SERVER_ONLY!r} if m in sys.modules])"
    imported = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "[]"
