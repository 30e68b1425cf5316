"""Operator routes, behind a bearer token (MNIST_ADMIN_TOKEN); without one they do not exist."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from app.api.deps import StateDep
from app.api.errors import ApiError
from app.api.responses import model_ref
from app.api.schemas import ErrorBody, ModelRef
from app.serving.reload import ReloadError
from model_store.store import ModelStoreError

bearer = HTTPBearer(auto_error=False, description="MNIST_ADMIN_TOKEN")


async def require_admin(
    state: StateDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    token = state.settings.admin_token
    if token is None:
        raise ApiError(404, "admin routes are disabled: set MNIST_ADMIN_TOKEN to enable them")
    if credentials is None:
        raise ApiError(
            401, "admin routes need 'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"}
        )
    if not secrets.compare_digest(credentials.credentials.encode(), token.get_secret_value().encode()):
        raise ApiError(403, "wrong admin token")


router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses={code: {"model": ErrorBody} for code in (400, 401, 403, 404)},
)


class ReloadRequest(BaseModel):
    version: int | None = Field(None, ge=1, description="version to serve; default: pinned or newest")


class ReloadResult(BaseModel):
    model: ModelRef
    previous_version: int


class StoreVersions(BaseModel):
    serving: ModelRef
    available: list[int]
    refused: dict[int, str] = Field(description="versions that failed to load, with the reason")


@router.post("/reload", response_model=ReloadResult, responses={409: {"model": ErrorBody}})
async def reload(state: StateDep, body: ReloadRequest | None = None) -> ReloadResult:
    """Switch this worker to another version now; in-flight requests finish on the old one.

    A version that fails to load or validate is refused (409) and the current one keeps serving.
    """
    previous = state.holder.current.version
    try:
        serving = await state.manager.switch_to(body.version if body else None)
    except (ReloadError, ModelStoreError) as exc:
        raise ApiError(409, f"reload refused, still serving version {previous}: {exc}") from exc
    return ReloadResult(model=model_ref(serving), previous_version=previous)


@router.get("/versions", response_model=StoreVersions)
async def versions(state: StateDep) -> StoreVersions:
    """Versions in the store, the one being served, and any refused ones."""
    return StoreVersions(
        serving=model_ref(state.holder.current),
        available=state.manager.store.versions(),
        refused=state.manager.refused,
    )
