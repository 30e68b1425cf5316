"""Open Inference Protocol: tensor parsing (unit) and the /v2 routes (HTTP)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.inputs.kserve import InferError, TooManyImagesError, build_infer_response, parse_infer_request
from model_store.mnist_data import MnistSplit


def infer_body(data: object, shape: list[int], datatype: str = "UINT8", name: str = "images") -> bytes:
    return json.dumps(
        {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}
    ).encode()


def test_parse_accepts_every_shape_and_datatype(test_split: MnistSplit) -> None:
    images = test_split.images[:3]
    as_unit = (images.astype(np.float32) / 255).tolist()
    cases = [
        infer_body(images.reshape(3, 784).tolist(), [3, 784]),
        infer_body(images.reshape(-1).tolist(), [3, 28, 28]),
        infer_body(as_unit, [3, 28, 28], "FP32"),
        infer_body(np.asarray(as_unit).reshape(3, 28, 28, 1).tolist(), [3, 28, 28, 1], "FP32"),
    ]
    for body in cases:
        _, parsed = parse_infer_request(body, None, max_images=10)
        np.testing.assert_array_equal(parsed, images)


def test_parse_binary_tensor_extension(test_split: MnistSplit) -> None:
    images = test_split.images[:2]
    raw = (images.astype("<f4") / 255).tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "images",
                    "shape": [2, 784],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    _, parsed = parse_infer_request(header + raw, str(len(header)), max_images=10)
    np.testing.assert_array_equal(parsed, images)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (infer_body([0] * 784, [1, 784], name="x"), "unknown input 'x'"),
        (infer_body([0] * 784, [1, 784], "INT16"), "datatype INT16"),
        (infer_body([0] * 784, [1, 28, 27]), "shape [1, 28, 27]"),
        (infer_body([0] * 700, [1, 784]), "700 values"),
        (infer_body([2.0] * 784, [1, 784], "FP32"), "within 0-1"),
        (infer_body(["a"] * 784, [1, 784]), "not a UINT8 tensor"),
        (b'{"inputs": 3}', "invalid inference request"),
        (b"not json", "invalid inference request"),
    ],
)
def test_parse_rejects_bad_requests_clearly(body: bytes, words: str) -> None:
    with pytest.raises(InferError, match=words.replace("[", r"\[").replace("]", r"\]")):
        parse_infer_request(body, None, max_images=10)


def test_binary_outputs_follow_the_json_header() -> None:
    request, _ = parse_infer_request(
        json.dumps(
            {
                "inputs": [{"name": "images", "shape": [1, 784], "datatype": "UINT8", "data": [0] * 784}],
                "outputs": [{"name": "digit", "parameters": {"binary_data": True}}],
            }
        ).encode(),
        None,
        max_images=1,
    )
    probabilities = np.eye(10, dtype=np.float32)[[3]]
    body, headers = build_infer_response(request, "mnist", 4, probabilities, ["digit"])
    length = int(headers["inference-header-content-length"])
    header = json.loads(body[:length])
    assert header["model_version"] == "4"
    assert header["outputs"] == [
        {"name": "digit", "datatype": "INT64", "shape": [1], "parameters": {"binary_data_size": 8}}
    ]
    assert np.frombuffer(body[length:], "<i8").tolist() == [3]


def test_v2_server_and_model_metadata(client: TestClient) -> None:
    assert client.get("/v2").json()["name"] == "mnist-serve"
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    for path in ("/v2/models/mnist", "/v2/models/mnist/versions/1"):
        body = client.get(path).json()
        assert body["versions"] == ["1"]
        assert body["inputs"][0]["shape"] == [-1, 28, 28, 1]
        assert {o["name"]: o["shape"] for o in body["outputs"]} == {
            "probabilities": [-1, 10],
            "digit": [-1],
            "verdict": [-1],
        }
    assert client.get("/v2/models/mnist/ready").status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/other",
        "/v2/models/mnist/versions/2",
        "/v2/models/mnist/versions/2/ready",
        "/v2/models/other/ready",
    ],
)
def test_v2_unknown_model_or_version_is_404_with_error_key(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert set(response.json()) == {"error"}


def test_v2_infer_matches_test_route(client: TestClient, test_split: MnistSplit) -> None:
    indices = [128, 0, 9]
    body = infer_body(test_split.images[indices].reshape(3, 784).tolist(), [3, 784])
    response = client.post("/v2/models/mnist/versions/1/infer", content=body)
    assert response.status_code == 200
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["probabilities"]["shape"] == [3, 10] and outputs["digit"]["datatype"] == "INT64"
    probabilities = np.array(outputs["probabilities"]["data"]).reshape(3, 10)
    for row, index in enumerate(indices):
        reference = client.get(f"/test/{index}").json()
        np.testing.assert_allclose(probabilities[row], reference["probabilities"], atol=1e-6)
        assert outputs["digit"]["data"][row] == reference["prediction"]
        assert outputs["verdict"]["data"][row] == reference["verdict"]
    assert outputs["verdict"]["datatype"] == "BYTES" and outputs["verdict"]["shape"] == [3]


def test_v2_infer_bad_tensor_is_400_with_error_key(client: TestClient) -> None:
    response = client.post("/v2/models/mnist/infer", content=infer_body([0] * 10, [1, 784]))
    assert response.status_code == 400
    assert "10 values" in response.json()["error"]


@pytest.mark.parametrize(
    "shape",
    [
        [2**60 + 1, 784],  # element count wraps around in int64
        [2**62, 28, 28],
        [10**30, 784],  # beyond int64 altogether
        [3, 2**61, 784],  # not a supported shape, whatever the sizes
    ],
)
def test_parse_huge_declared_shapes_fail_cleanly(shape: list[int]) -> None:
    with pytest.raises(InferError):
        parse_infer_request(infer_body([0] * 784, shape), None, max_images=10_000)


def test_parse_refuses_too_many_images_before_reading_data() -> None:
    # The declared count alone is over the limit: refused before any pixel is read or allocated.
    body = infer_body("not even a list", [10_001, 784])
    with pytest.raises(TooManyImagesError, match="10001 images"):
        parse_infer_request(body, None, max_images=10_000)


@pytest.mark.parametrize("shape", [[2**60 + 1, 784], [10**30, 784], [-1, 784]])
def test_v2_infer_huge_shape_is_4xx_not_500(client: TestClient, shape: list[int]) -> None:
    response = client.post("/v2/models/mnist/infer", content=infer_body([0] * 784, shape))
    assert response.status_code in (400, 413), response.text
    assert "error" in response.json()
    assert client.get("/test/128").json()["prediction"] == 8


def test_binary_verdicts_use_tritons_bytes_layout() -> None:
    request, _ = parse_infer_request(
        infer_body([0] * 1568, [2, 784]).replace(
            b'"inputs"', b'"parameters": {"binary_data_output": true}, "inputs"'
        ),
        None,
        max_images=2,
    )
    body, headers = build_infer_response(
        request, "mnist", 1, np.eye(10, dtype=np.float32)[[1, 2]], ["digit", "not_a_digit"]
    )
    length = int(headers["inference-header-content-length"])
    outputs = json.loads(body[:length])["outputs"]
    assert [o["name"] for o in outputs] == ["probabilities", "digit", "verdict"]
    verdict = body[length + 80 + 16 :]
    assert verdict == b"\x05\x00\x00\x00digit\x0b\x00\x00\x00not_a_digit"
