"""FastAPI dependencies: the only way routes reach settings, the model and the test set, and
the API-key check in front of the inference routes (off unless MNIST_API_KEYS_FILE is set)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

import numpy as np
from fastapi import Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import InterfaceError, OperationalError

from app.api.errors import ApiError
from app.api.examples import VERSION_EXAMPLE
from app.config import Settings
from app.operations.api_keys import KeyRefusedError, admit
from app.records.writer import PredictionLog
from app.serving.batcher import BatchResult, OverloadedError
from app.serving.explain import Attribution, ExplainBusyError
from app.serving.model import ServingModel
from app.serving.router import UnknownVersionError
from app.serving.state import ServiceState
from model_store.mnist_data import MnistSplit

T = TypeVar("T")


async def get_state(request: Request) -> ServiceState:
    state: ServiceState | None = getattr(request.app.state, "service", None)
    if state is None:
        raise ApiError(503, "the service is starting; no model is loaded yet")
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]


bearer = HTTPBearer(auto_error=False, description="an API key from MNIST_API_KEYS_FILE")
key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the same key, another header")
HOW = "send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"


async def require_api_key(
    request: Request,
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    header_key: Annotated[str | None, Depends(key_header)],
) -> None:
    """401 without a key, 403 with a wrong one, 429 over the key's rate; notes the key's name."""
    keys = state.api_keys
    if keys is None:
        return
    presented = header_key or (credentials.credentials if credentials is not None else None)
    try:
        request.state.api_key = admit(keys, state.rate_limiter, state.metrics.api_key_requests, presented)
    except KeyRefusedError as exc:
        if exc.reason == "missing":
            raise ApiError(
                401, f"this route needs an API key: {HOW}", {"WWW-Authenticate": "Bearer"}
            ) from exc
        if exc.reason == "refused":
            raise ApiError(403, str(exc)) from exc
        raise ApiError(429, str(exc), {"Retry-After": str(exc.retry_after)}) from exc


async def get_settings(state: StateDep) -> Settings:
    return state.settings


VERSION_DESCRIPTION = "a loaded version to answer (default: the served one)"


VersionParam = Annotated[
    int | None, Query(ge=1, description=VERSION_DESCRIPTION, openapi_examples=VERSION_EXAMPLE)
]


class RequestPredictor:
    """The predictor as one request sees it: the version it asked for, or else the default, 503
    when overloaded; it notes which version answers (for the X-Model-Version header, the
    per-version metrics and the log line) and counts the predicted digits."""

    def __init__(self, state: ServiceState, request: Request, requested: str | None) -> None:
        self._state = state
        self._request = request
        self._requested = requested
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
        # A canary's share is sticky per client: its API key, else the request id it sends.
        client = getattr(state, "api_key", None) or state.request_id
        try:
            return self._state.router.choose(self._requested, client)
        except UnknownVersionError as exc:
            raise ApiError(404, str(exc)) from exc

    async def predict(self, images: np.ndarray, logged: bool = True) -> BatchResult:
        """The answer, with prediction ids and logged under the route's path, unless not `logged`."""
        route = None
        if logged:
            matched = self._request.scope.get("route")
            route = matched.path if matched is not None else self._request.url.path
        api_key = getattr(self._request.state, "api_key", None)
        try:
            return await self._state.predict(images, self.model(), "http", route, api_key)
        except OverloadedError as exc:
            raise ApiError(
                503, f"the service is overloaded ({exc}); retry shortly", {"Retry-After": "1"}
            ) from exc

    async def explain(self, images: np.ndarray, model: ServingModel) -> list[Attribution]:
        """Attribution maps from `model` (the version that answered); 503 while explain is busy."""
        try:
            return await self._state.explainer.explain(model, images)
        except ExplainBusyError as exc:
            raise ApiError(
                503,
                "explanations are busy; retry shortly (plain predictions are not affected)",
                {"Retry-After": "1"},
            ) from exc


async def get_request_predictor(request: Request, version: VersionParam = None) -> RequestPredictor:
    """The one reader of `?version=`, for every route that takes it: checked by FastAPI (422 naming
    the parameter) and documented with an example on the parameter, where Postman reads it.

    It reads the state itself rather than through `StateDep`: FastAPI solves each sub-dependency
    on every request. With the state and the version as sub-dependencies (and a query model for
    `/predict`'s options), `python -m bench.ab --scenario predict` measured 2,158 `/predict`
    requests a second at 64 connections against 2,532 this way, and 0.524 ms of the server's CPU
    per request against 0.451 ms, in 5 alternating rounds."""
    state = await get_state(request)
    return RequestPredictor(state, request, None if version is None else str(version))


async def get_test_set(state: StateDep) -> MnistSplit:
    if state.test_set is None:
        raise ApiError(503, f"the MNIST test set is not available: {state.test_set_error}")
    return state.test_set


DATABASE_RETRY_SECONDS = 5


async def in_database(work: Callable[..., T], *args: object) -> T:
    """`work(*args)` on a worker thread (the database's I/O never runs on the event loop); 503 with
    Retry-After while the database does not answer."""
    try:
        return await run_in_threadpool(work, *args)
    except (OperationalError, InterfaceError) as exc:
        raise ApiError(
            503,
            "the prediction log's database is unreachable; retry shortly",
            {"Retry-After": str(DATABASE_RETRY_SECONDS)},
        ) from exc


async def get_records(state: StateDep) -> PredictionLog:
    if state.records is None:  # the routes that need it are mounted only with the log on
        raise ApiError(404, "the prediction log is off (MNIST_PREDICTION_LOG)")
    return state.records


SettingsDep = Annotated[Settings, Depends(get_settings)]
RecordsDep = Annotated[PredictionLog, Depends(get_records)]
PredictorDep = Annotated[RequestPredictor, Depends(get_request_predictor)]
TestSetDep = Annotated[MnistSplit, Depends(get_test_set)]
