"""Liveness and readiness: `/healthz` answers while the process runs, `/readyz` once a model is loaded."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import StateDep
from app.api.responses import model_ref
from app.api.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def live() -> Health:
    """Liveness: the process is up and answering."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"description": "no model loaded yet"}})
async def ready(state: StateDep) -> Readiness:
    """Readiness: a model is loaded and warmed up, so predictions will answer."""
    return Readiness(
        status="ready", model=model_ref(state.holder.current), test_set_loaded=state.test_set is not None
    )
