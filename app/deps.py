"""FastAPI dependencies: the only way routes reach settings, the model and the test set."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.config import Settings
from app.errors import ApiError
from app.state import Predictor, ServiceState
from model_store.mnist_data import MnistSplit


def get_state(request: Request) -> ServiceState:
    state: ServiceState | None = getattr(request.app.state, "service", None)
    if state is None:
        raise ApiError(503, "the service is starting; no model is loaded yet")
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]


def get_settings(state: StateDep) -> Settings:
    return state.settings


def get_predictor(state: StateDep) -> Predictor:
    return state.predictor


def get_test_set(state: StateDep) -> MnistSplit:
    if state.test_set is None:
        raise ApiError(503, f"the MNIST test set is not available: {state.test_set_error}")
    return state.test_set


SettingsDep = Annotated[Settings, Depends(get_settings)]
PredictorDep = Annotated[Predictor, Depends(get_predictor)]
TestSetDep = Annotated[MnistSplit, Depends(get_test_set)]
