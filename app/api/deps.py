"""FastAPI dependencies: the only way routes reach settings, the model and the test set."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import Depends, Query, Request

from app.api.errors import ApiError
from app.config import Settings
from app.serving.batcher import BatchResult, OverloadedError
from app.serving.explain import ExplainBusyError, Explanation
from app.serving.model import ServingModel
from app.serving.router import UnknownVersionError
from app.serving.state import ServiceState
from model_store.mnist_data import MnistSplit


async def get_state(request: Request) -> ServiceState:
    state: ServiceState | None = getattr(request.app.state, "service", None)
    if state is None:
        raise ApiError(503, "the service is starting; no model is loaded yet")
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]


async def get_settings(request: Request) -> Settings:
    # Reads the state itself rather than through StateDep: every sub-dependency costs a hot route
    # several microseconds of FastAPI's dependency solving.
    return (await get_state(request)).settings


class RequestPredictor:
    """The predictor as one request sees it: the version asked for (`?version=`, or the v2 path) or
    else the default, 503 when overloaded; it notes which version answers (for the X-Model-Version
    header, the per-version metrics and the log line) and counts the predicted digits."""

    def __init__(self, state: ServiceState, request: Request) -> None:
        self._state = state
        self._request = request
        self._model: ServingModel | None = None

    @property
    def settings(self) -> Settings:
        """The service's settings, so a hot route needs no second dependency to read them."""
        return self._state.settings

    def model(self) -> ServingModel:
        """The version that answers this request (chosen once)."""
        if self._model is None:
            self._model = self._choose()
            self._request.state.model_version = self._model.version
        return self._model

    def _choose(self) -> ServingModel:
        state = self._request.state
        requested = self._request.path_params.get("version") or self._request.query_params.get("version")
        # A canary's share is sticky per client: its API key, else the request id it sends.
        client = getattr(state, "api_key", None) or state.request_id
        try:
            return self._state.router.choose(requested, client)
        except UnknownVersionError as exc:
            raise ApiError(404, str(exc)) from exc

    async def predict(self, images: np.ndarray) -> BatchResult:
        try:
            return await self._state.predict(images, self.model(), "http")
        except OverloadedError as exc:
            raise ApiError(
                503, f"the service is overloaded ({exc}); retry shortly", {"Retry-After": "1"}
            ) from exc

    async def explain(self, images: np.ndarray, model: ServingModel) -> list[Explanation]:
        """Attribution maps from `model` (the version that answered); 503 while explain is busy."""
        try:
            return await self._state.explainer.explain(model, images)
        except ExplainBusyError as exc:
            raise ApiError(
                503,
                "explanations are busy; retry shortly (plain predictions are not affected)",
                {"Retry-After": "1"},
            ) from exc


async def get_request_predictor(request: Request) -> RequestPredictor:
    return RequestPredictor(await get_state(request), request)


async def get_versioned_predictor(
    request: Request,
    version: Annotated[
        int | None, Query(ge=1, description="a loaded version to answer (default: the served one)")
    ] = None,
) -> RequestPredictor:
    """The predictor for routes that take `?version=` (checked here, read by RequestPredictor)."""
    return await get_request_predictor(request)


async def get_test_set(state: StateDep) -> MnistSplit:
    if state.test_set is None:
        raise ApiError(503, f"the MNIST test set is not available: {state.test_set_error}")
    return state.test_set


SettingsDep = Annotated[Settings, Depends(get_settings)]
PredictorDep = Annotated[RequestPredictor, Depends(get_request_predictor)]
VersionedPredictorDep = Annotated[RequestPredictor, Depends(get_versioned_predictor)]
TestSetDep = Annotated[MnistSplit, Depends(get_test_set)]
