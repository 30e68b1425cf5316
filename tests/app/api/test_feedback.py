"""Every answer's id, the log behind it, POST /feedback, GET /monitoring and deleting records,
in process on a real store and a real SQLite file."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select

from app.config import Settings
from app.grpc.open_inference.messages import message
from app.main import create_app
from app.records.tables import PredictionRow
from model_store.mnist_data import MnistSplit
from tests.app.conftest import encode
from tests.app.operations.test_api_keys import ALICE, write_keys
from tests.support.live_server import free_port

pytestmark = pytest.mark.slow  # the session's trained store

TOKEN = "test-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def logged_app(settings: Settings, database: str, **overrides: object) -> TestClient:
    configured = settings.model_copy(
        update={"database_url": database, "admin_token": TOKEN, "reload_poll_seconds": 0, **overrides}
    )
    return TestClient(create_app(Settings.model_validate(configured.model_dump())))


@pytest.fixture
def database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'log.db'}"


@pytest.fixture
def logged(settings: Settings, database: str) -> Iterator[TestClient]:
    with logged_app(settings, database) as client:
        yield client


def rows(database: str) -> dict[str, PredictionRow]:
    engine = create_engine(database)
    with engine.connect() as connection:
        found = {row.id: row for row in connection.execute(select(PredictionRow))}
    engine.dispose()
    return found  # type: ignore[return-value]


def predict(client: TestClient, pixels: np.ndarray) -> dict[str, object]:
    response = client.post("/predict", files={"file": ("digit.png", encode(pixels))})
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def test_every_route_gives_ids_and_logs_what_the_model_saw(
    logged: TestClient, database: str, test_split: MnistSplit
) -> None:
    single = predict(logged, test_split.images[128])
    buffer = io.BytesIO()
    np.save(buffer, test_split.images[:3])
    batch = logged.post(
        "/predict/batch", content=buffer.getvalue(), headers={"Content-Type": "application/x-npy"}
    )
    sample = logged.get("/test/7").json()
    infer = logged.post(
        "/v2/models/mnist/infer",
        json={
            "inputs": [
                {
                    "name": "images",
                    "datatype": "UINT8",
                    "shape": [2, 784],
                    "data": test_split.images[10:12].reshape(-1).tolist(),
                }
            ]
        },
    ).json()
    ids = [single["prediction_id"], *batch.json()["prediction_ids"], sample["prediction_id"]]
    ids += infer["parameters"]["prediction_ids"].split(",")
    assert len(set(ids)) == 7
    # The log flushes within a fraction of a second; feedback waits for an answer still queued.
    assert logged.post("/feedback", json={"prediction_id": ids[-1], "label": 1}).status_code == 201
    logged_rows = rows(database)
    assert set(ids) <= set(logged_rows)
    seen = np.frombuffer(logged_rows[ids[2]].pixels, np.uint8).reshape(28, 28)
    assert np.array_equal(seen, test_split.images[1])
    assert logged_rows[ids[0]].route == "/predict" and logged_rows[ids[5]].route == "/v2/models/{name}/infer"
    assert logged_rows[ids[0]].digit == single["prediction"]
    assert logged_rows[ids[0]].verdict == single["verdict"]
    assert logged_rows[ids[0]].precision == logged.get("/model").json()["loaded"][0]["precision"]
    assert batch.json()["predictions"] == [logged_rows[i].digit for i in ids[1:4]]


def test_an_explanation_of_an_answer_is_not_a_second_answer(
    logged: TestClient, database: str, test_split: MnistSplit
) -> None:
    upload = {"file": ("digit.png", encode(test_split.images[0]))}
    answer = predict(logged, test_split.images[0])
    version = answer["model"]["version"]  # type: ignore[index]
    explained = logged.post(f"/predict/explanation?version={version}", files=upload)
    assert explained.status_code == 200, explained.text
    assert explained.json()["digit"] == answer["prediction"] and "prediction_id" not in explained.json()
    assert explained.json()["overlay_png"]
    later = predict(logged, test_split.images[1])
    # Feedback waits for its answer to be written, and the log writes in order.
    assert (
        logged.post("/feedback", json={"prediction_id": later["prediction_id"], "label": 2}).status_code
        == 201
    )
    assert set(rows(database)) == {answer["prediction_id"], later["prediction_id"]}
    assert logged.post("/predict/explanation?version=9", files=upload).status_code == 404


def test_feedback_is_created_then_replaced(logged: TestClient, test_split: MnistSplit) -> None:
    answer = predict(logged, test_split.images[128])
    created = logged.post("/feedback", json={"prediction_id": answer["prediction_id"], "label": 8})
    assert created.status_code == 201
    body = created.json()
    assert body["prediction_id"] == answer["prediction_id"] and body["label"] == 8
    assert body["predicted"] == answer["prediction"] and body["correct"] is (answer["prediction"] == 8)
    assert body["model"] == {"name": "mnist", "version": 1}
    assert body["created_at"] == body["updated_at"]
    replaced = logged.post(
        "/feedback", json={"prediction_id": answer["prediction_id"], "label": "not_a_digit"}
    )
    assert replaced.status_code == 200
    again = replaced.json()
    assert again["label"] == "not_a_digit" and again["created_at"] == body["created_at"]
    assert again["updated_at"] > body["updated_at"]
    metrics = logged.get("/metrics").text
    assert 'mnist_feedback_total{outcome="correct",version="1"} 1.0' in metrics
    assert 'mnist_feedback_total{outcome="wrong",version="1"} 1.0' in metrics


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"prediction_id": "0" * 32, "label": 3}, 404),
        ({"prediction_id": "not-an-id", "label": 3}, 422),
        ({"prediction_id": "0" * 32, "label": 10}, 422),
        ({"prediction_id": "0" * 32, "label": "seven"}, 422),
        ({"prediction_id": "0" * 32}, 422),
        ({"prediction_id": "0" * 32, "label": True}, 422),
        ({"prediction_id": "0" * 32, "label": "7"}, 422),
        ({"prediction_id": "f" * 32, "label": 7}, 404),  # an id from the year 10889
    ],
)
def test_feedback_refuses_unknown_ids_and_bad_labels(
    logged: TestClient, body: dict[str, object], status: int
) -> None:
    response = logged.post("/feedback", json=body)
    assert response.status_code == status
    assert isinstance(response.json()["detail"], str)


def test_feedback_refuses_a_body_that_is_not_json(logged: TestClient) -> None:
    assert (
        logged.post("/feedback", content=b"{", headers={"Content-Type": "application/json"}).status_code
        == 422
    )
    assert logged.post("/feedback", content=b"x", headers={"Content-Type": "text/plain"}).status_code == 415


def test_a_contribution_is_normalised_like_predict_and_kept(
    logged: TestClient, database: str, test_split: MnistSplit
) -> None:
    paper = 255 - np.kron(test_split.images[3], np.ones((4, 4), np.uint8))  # dark ink on white, 112x112
    response = logged.post("/feedback", files={"file": ("scan.png", encode(paper))}, data={"label": "0"})
    assert response.status_code == 201
    body = response.json()
    assert (body["predicted"], body["correct"], body["label"]) == (None, None, 0)
    normalised = logged.post(
        "/predict", params={"include_image": "true"}, files={"file": ("scan.png", encode(paper))}
    ).json()["normalisation"]["image_png"]
    kept = rows(database)[body["prediction_id"]]
    assert kept.route == "feedback" and kept.digit is None
    from base64 import b64decode

    from PIL import Image

    seen = np.asarray(Image.open(io.BytesIO(b64decode(normalised))))
    assert np.array_equal(np.frombuffer(kept.pixels, np.uint8).reshape(28, 28), seen)


def test_a_contribution_needs_an_image_and_a_label(logged: TestClient) -> None:
    image = encode(np.zeros((28, 28), np.uint8))
    assert logged.post("/feedback", files={"file": ("d.png", image)}, data={"label": "12"}).status_code == 422
    assert logged.post("/feedback", files={"file": ("d.png", image)}).status_code == 422
    assert (
        logged.post("/feedback", files={"file": ("d.png", b"not an image")}, data={"label": "1"}).status_code
        == 400
    )


def test_monitoring_reports_accuracy_confusions_and_verdicts(
    logged: TestClient, test_split: MnistSplit
) -> None:
    answers = [predict(logged, test_split.images[i]) for i in range(6)]
    labels = test_split.labels[:6].tolist()
    labels[0] = (answers[0]["prediction"] + 1) % 10  # type: ignore[operator]
    for answer, label in zip(answers, labels, strict=True):
        assert (
            logged.post(
                "/feedback", json={"prediction_id": answer["prediction_id"], "label": label}
            ).status_code
            == 201
        )
    correct = sum(answer["prediction"] == label for answer, label in zip(answers, labels, strict=True))
    (version,) = logged.get("/monitoring").json()["versions"]
    assert version["version"] == 1 and version["answers"] == 6 and version["feedback"] == 6
    assert version["accuracy"] == pytest.approx(correct / 6)
    low, high = version["accuracy_interval"]
    assert low < correct / 6 < high or correct == 6
    assert {"label": labels[0], "predicted": answers[0]["prediction"], "count": 1} in version["confusions"]
    assert sum(version["verdicts"].values()) == 6 and version["drift"] is None
    assert f'mnist_live_accuracy{{version="1"}} {correct / 6}' in logged.get("/metrics").text


def test_admin_deletes_records_in_a_time_range(
    logged: TestClient, database: str, test_split: MnistSplit
) -> None:
    answer = predict(logged, test_split.images[0])
    assert (
        logged.post("/feedback", json={"prediction_id": answer["prediction_id"], "label": 7}).status_code
        == 201
    )
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    assert logged.delete("/admin/predictions", params={"before": later}).status_code == 401
    assert logged.delete("/admin/predictions", headers=ADMIN).status_code == 400
    earlier = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert logged.delete("/admin/predictions", params={"before": earlier}, headers=ADMIN).json() == {
        "deleted": 0
    }
    response = logged.delete("/admin/predictions", params={"after": earlier, "before": later}, headers=ADMIN)
    assert response.status_code == 200 and response.json() == {"deleted": 1}
    assert rows(database) == {}
    gone = logged.post("/feedback", json={"prediction_id": answer["prediction_id"], "label": 7})
    assert gone.status_code == 404


def test_feedback_needs_a_key_where_inference_does_and_the_log_keeps_its_name(
    settings: Settings, database: str, tmp_path: Path, test_split: MnistSplit
) -> None:
    keys = tmp_path / "keys"
    write_keys(keys, {"alice": ALICE})
    with logged_app(settings, database, api_keys_file=keys) as client:
        answer = client.post(
            "/predict", files={"file": ("d.png", encode(test_split.images[0]))}, headers={"X-API-Key": ALICE}
        ).json()
        body = {"prediction_id": answer["prediction_id"], "label": 7}
        assert client.post("/feedback", json=body).status_code == 401
        assert client.post("/feedback", json=body, headers={"X-API-Key": ALICE}).status_code == 201
        assert client.get("/monitoring").status_code == 200  # aggregates only: open, like /model
    assert rows(database)[answer["prediction_id"]].api_key == "alice"


def test_grpc_answers_carry_ids_in_their_parameters(
    settings: Settings, database: str, test_split: MnistSplit
) -> None:
    port = free_port()
    with logged_app(settings, database, grpc_port=port) as client:
        infer = message("ModelInferRequest")(model_name="mnist")
        tensor = infer.inputs.add(name="images", datatype="UINT8", shape=[2, 28, 28])
        tensor.contents.uint_contents.extend(test_split.images[:2].reshape(-1).tolist())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(
                "/inference.GRPCInferenceService/ModelInfer",
                request_serializer=type(infer).SerializeToString,
                response_deserializer=message("ModelInferResponse").FromString,
            )
            response = call(infer, timeout=30)
        ids = response.parameters["prediction_ids"].string_param.split(",")
        assert len(ids) == 2
        assert client.post("/feedback", json={"prediction_id": ids[1], "label": 2}).status_code == 201
    assert rows(database)[ids[0]].route == "grpc ModelInfer"


def test_with_the_log_off_answers_keep_ids_and_nothing_is_kept(
    settings: Settings, tmp_path: Path, test_split: MnistSplit
) -> None:
    database = tmp_path / "never.db"
    with logged_app(settings, f"sqlite:///{database}", prediction_log=False) as client:
        assert len(predict(client, test_split.images[0])["prediction_id"]) == 32  # type: ignore[arg-type]
        assert client.post("/feedback", json={"prediction_id": "0" * 32, "label": 1}).status_code == 404
        assert client.get("/monitoring").status_code == 404
    assert not database.exists()
