"""Explanations: attribution maps that mean something, by either method, served without slowing
predictions."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.config import Settings
from app.main import create_app
from app.serving.explain import (
    METHODS,
    OCCLUSION_BATCH,
    Attribution,
    ExplainBusyError,
    Explains,
    ExplainService,
    IntegratedGradients,
    Method,
    Occlusion,
)
from app.serving.model import ServingModel
from model_store.mnist_data import MnistSplit
from model_store.preprocessing import to_model_input
from model_store.store import ModelStore
from tests.app.conftest import encode
from tests.support.deletion import deletion_curves

DIGITS = 500


@pytest.fixture(scope="module")
def serving(fixture_store: Path) -> ServingModel:
    return ServingModel.compile(ModelStore(fixture_store).load())


def explainer_of(method: Method, model: keras.Model, shape: tuple[int, ...]) -> Explains:
    if method == "occlusion":
        return Occlusion(lambda images: keras.ops.convert_to_numpy(model(images, training=False)), shape)
    return IntegratedGradients(model, shape)


# Integrated gradients run on TensorFlow: a minute of the fast lane, so they run in the slow one.
@pytest.fixture(
    scope="module",
    params=[pytest.param(m, marks=pytest.mark.slow) if m == "integrated_gradients" else m for m in METHODS],
)
def method(request: pytest.FixtureRequest) -> Method:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def maps(serving: ServingModel, test_split: MnistSplit, method: Method) -> list[Attribution]:
    shape = serving.loaded.metadata.input.shape
    # Occlusion as the service runs it: on the serving runtime's forward pass.
    explainer = (
        Occlusion(lambda images: serving.forward_float(images)[0], shape)
        if method == "occlusion"
        else IntegratedGradients(serving.loaded.model, shape)
    )
    images = to_model_input(test_split.images[:DIGITS])
    return [
        found for start in range(0, DIGITS, 50) for found in explainer.explain(images[start : start + 50])
    ]


def test_deleting_the_top_ranked_pixels_destroys_the_answer_much_faster_than_random(
    serving: ServingModel, maps: list[Attribution], test_split: MnistSplit
) -> None:
    by_map, at_random = deletion_curves(serving, maps, test_split.images[:DIGITS])
    ratio = np.trapezoid(by_map) / np.trapezoid(at_random)
    # Measured on the session's small model: about 0.3 (README states the full model's number).
    assert ratio < 0.6, f"area under the deletion curve, map / random ink = {ratio:.2f}"
    # After 39 pixels (5 %, about a third of a digit's ink), the map's choice has done far more harm.
    assert by_map[4] < 0.5 * at_random[4], (by_map.round(3), at_random.round(3))


def test_occlusion_runs_bounded_forward_passes(test_split: MnistSplit) -> None:
    """170 copies per image: 100 images in one pass of a Keras cnn once took 24 GB and the OOM killer."""
    sizes: list[int] = []

    def forward(images: np.ndarray) -> np.ndarray:
        sizes.append(len(images))
        return np.full((len(images), 10), 0.1, np.float32)

    found = Occlusion(forward, (28, 28, 1)).explain(to_model_input(test_split.images[:100]))
    assert len(found) == 100 and sum(sizes) == 100 * 170
    assert max(sizes) <= OCCLUSION_BATCH


def test_background_pixels_carry_no_evidence(maps: list[Attribution], test_split: MnistSplit) -> None:
    background = test_split.images[:DIGITS] == 0
    assert all(not found.attributions[black].any() for found, black in zip(maps, background, strict=True))


@pytest.mark.slow  # integrated gradients, on TensorFlow
@pytest.mark.parametrize("method", ["integrated_gradients"], indirect=True)
def test_integrated_gradients_add_up_to_the_change_in_probability(
    serving: ServingModel, maps: list[Attribution]
) -> None:
    black = serving.forward(np.zeros((1, 28, 28), np.uint8))[0]
    gaps = [
        found.attributions.sum() - (found.probabilities[found.digit] - black[found.digit]) for found in maps
    ]
    assert np.median(np.abs(gaps)) < 0.05  # completeness, up to the 32-step path integral


def test_a_network_with_random_weights_gives_different_maps(
    serving: ServingModel, maps: list[Attribution], test_split: MnistSplit, method: Method
) -> None:
    """Adebayo et al.'s sanity check: the map must depend on what the network learned."""
    trained = serving.loaded.model
    shape = serving.loaded.metadata.input.shape
    randomised = keras.models.clone_model(trained)  # same architecture, freshly initialised weights
    keras.utils.set_random_seed(1)
    images = to_model_input(test_split.images[:100])
    digits = np.array([found.digit for found in maps[:100]])
    random_maps = explainer_of(method, randomised, shape).explain(images, digits)
    again = explainer_of(method, trained, shape).explain(images, digits)

    inks = test_split.images[:100] > 0

    def rank_correlation(a: np.ndarray, b: np.ndarray, ink: np.ndarray) -> float:
        # Over the ink only: background pixels are 0 in every map (no ink, no evidence).
        ranks = [np.argsort(np.argsort(np.abs(x[ink]))) for x in (a, b)]
        return float(np.corrcoef(ranks[0], ranks[1])[0, 1])

    same, different = np.median(
        [
            (
                rank_correlation(m.attributions, a.attributions, ink),
                rank_correlation(m.attributions, r.attributions, ink),
            )
            for m, a, r, ink in zip(maps[:100], again, random_maps, inks, strict=True)
        ],
        axis=0,
    )
    assert same > 0.99
    assert different < 0.8 * same, f"rank correlation real vs randomised weights {different:.2f}"


def test_predict_with_explain_returns_a_map_and_an_overlay(
    client: TestClient, test_split: MnistSplit
) -> None:
    response = client.post("/predict?explain=true", files={"file": encode(test_split.images[128])})
    assert response.status_code == 200, response.text
    body = response.json()
    explanation = body["explanation"]
    assert body["prediction"] == explanation["digit"] == 8
    assert explanation["method"] == "occlusion" and explanation["patch"] == 4 and explanation["steps"] is None
    assert explanation["runner_up"] != 8
    attributions = np.array(explanation["attributions"])
    assert attributions.shape == (28, 28)
    ink = test_split.images[128] > 0
    assert attributions[~ink].max() == 0.0  # black pixels carry no evidence against a black baseline
    assert attributions[ink].sum() > 0.1
    overlay = Image.open(io.BytesIO(base64.b64decode(explanation["overlay_png"])))
    assert overlay.size == (224, 224) and overlay.mode == "RGB"
    assert (
        client.post("/predict", files={"file": encode(test_split.images[128])}).json()["explanation"] is None
    )
    # Served on ONNX Runtime and explained by its forward passes: the Keras model was never read.
    assert "model" not in vars(client.app.state.service.holder.current.loaded)  # type: ignore[attr-defined]


@pytest.mark.slow  # serves integrated gradients: TensorFlow in the request path
def test_integrated_gradients_when_configured(settings: Settings, test_split: MnistSplit) -> None:
    configured = settings.model_copy(update={"explain_method": "integrated_gradients"})
    with TestClient(create_app(configured)) as client:
        response = client.post("/predict?explain=true", files={"file": encode(test_split.images[128])})
        assert response.status_code == 200, response.text
        explanation = response.json()["explanation"]
        assert explanation["method"] == "integrated_gradients" and explanation["steps"] == 32
        assert explanation["patch"] is None and explanation["digit"] == 8
        attributions = np.array(explanation["attributions"])
        assert attributions[test_split.images[128] == 0].max() == 0.0 and attributions.sum() > 0.5


def test_kserve_v1_explain(client: TestClient, test_split: MnistSplit) -> None:
    instances = [test_split.images[0].reshape(-1).tolist(), test_split.images[1].tolist()]
    response = client.post("/v1/models/mnist:explain", json={"instances": instances})
    assert response.status_code == 200, response.text
    explained = response.json()["explanations"]
    assert [e["prediction"] for e in explained] == test_split.labels[:2].tolist()
    assert all(np.array(e["explanation"]["attributions"]).shape == (28, 28) for e in explained)
    assert client.post("/v1/models/mnist:explain", json={"instances": [[0] * 10]}).status_code == 400
    assert client.post("/v1/models/mnist:explain", json={"instances": [[300] * 784]}).status_code == 400
    assert client.post("/v1/models/mnist:explain", json={"instances": [[2**70] * 784]}).status_code == 400
    assert client.post("/v1/models/other:explain", json={"instances": instances}).status_code == 404
    assert client.post("/v1/models/mnist:explain", json={"instances": []}).status_code == 422


class HeldExplainer(ExplainService):
    """The real service, but every explanation waits for the test to release it."""

    def __init__(self) -> None:
        super().__init__(concurrency=1, wait_seconds=0.5)
        self.started, self.release = threading.Event(), threading.Event()

    def _explain(self, serving: ServingModel, pixels: np.ndarray) -> list[Attribution]:
        self.started.set()
        assert self.release.wait(60)
        return super()._explain(serving, pixels)


@pytest.fixture
def held(client: TestClient) -> Iterator[HeldExplainer]:
    state = client.app.state.service  # type: ignore[attr-defined]
    original, state.explainer = state.explainer, HeldExplainer()
    try:
        yield state.explainer
    finally:
        state.explainer.release.set()
        state.explainer = original


def test_busy_explain_is_503_and_predictions_go_on(
    client: TestClient, held: HeldExplainer, test_split: MnistSplit
) -> None:
    digit = encode(test_split.images[128])
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.post, "/predict?explain=true", files={"file": digit})
        assert held.started.wait(60)
        refused = client.post("/predict?explain=true", files={"file": digit})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert "explanations are busy" in refused.json()["detail"]
        for _ in range(5):  # plain predictions are not held up by the explanation in flight
            assert client.post("/predict", files={"file": digit}).json()["prediction"] == 8
        held.release.set()
        assert first.result(60).status_code == 200


def test_explain_service_refuses_beyond_its_slots(serving: ServingModel, test_split: MnistSplit) -> None:
    import asyncio

    service = HeldExplainer()

    async def scenario() -> None:
        first = asyncio.ensure_future(service.explain(serving, test_split.images[:1]))
        await asyncio.to_thread(service.started.wait, 60)
        with pytest.raises(ExplainBusyError):
            await service.explain(serving, test_split.images[:1])
        service.release.set()
        assert (await first)[0].digit == serving.forward(test_split.images[:1]).argmax()

    asyncio.run(scenario())
    service.close()
