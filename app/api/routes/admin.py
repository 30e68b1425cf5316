"""Operator routes, behind a bearer token (MNIST_ADMIN_TOKEN); without one they do not exist."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from app.api.deps import StateDep
from app.api.errors import ApiError
from app.api.responses import model_ref, policy_of
from app.api.schemas import ErrorBody, ModelRef, Policy
from app.serving.reload import ReloadError
from model_store.store import ModelStoreError

bearer = HTTPBearer(auto_error=False, description="MNIST_ADMIN_TOKEN")


async def require_admin(
    state: StateDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    # The router is only mounted when a token is configured (app.main), so there is one to compare.
    token = state.settings.admin_token
    assert token is not None
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
    version: int | None = Field(
        None,
        ge=1,
        description="pin this version on every worker until DELETE /admin/pin; "
        "default: apply the current policy (a pin, or the newest version) now",
    )


class ReloadResult(BaseModel):
    model: ModelRef
    previous_version: int
    policy: Policy


class StoreVersions(BaseModel):
    serving: ModelRef
    available: list[int]
    policy: Policy
    refused: dict[int, str] = Field(description="versions that failed to load, with the reason")


CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "refused; the current version keeps serving"}
}


def refused(previous: int, exc: Exception) -> ApiError:
    return ApiError(409, f"reload refused, still serving version {previous}: {exc}")


@router.post("/reload", response_model=ReloadResult, responses=CONFLICT)
async def reload(state: StateDep, request: Request, body: ReloadRequest | None = None) -> ReloadResult:
    """With a version: pin it. The pin is kept in the store, so every worker switches to it (within
    MNIST_RELOAD_POLL_SECONDS) and it survives restarts, until `DELETE /admin/pin`. Without one:
    look at the store now and serve what the policy says. In-flight requests finish on the old
    version; one that fails to load or validate is refused (409) and the current one keeps serving.
    """
    previous = state.holder.current.version
    try:
        if body is not None and body.version is not None:
            pinned_by = f"admin API (request {request.state.request_id})"
            serving = await state.manager.pin(body.version, pinned_by)
        else:
            serving = await state.manager.switch_to()
        policy = await state.manager.policy()
    except (ReloadError, ModelStoreError) as exc:
        raise refused(previous, exc) from exc
    return ReloadResult(model=model_ref(serving), previous_version=previous, policy=policy_of(policy))


@router.delete("/pin", response_model=ReloadResult, responses=CONFLICT)
async def unpin(state: StateDep) -> ReloadResult:
    """Drop the pin: every worker follows the newest version again."""
    previous = state.holder.current.version
    try:
        serving = await state.manager.follow_newest()
        policy = await state.manager.policy()
    except (ReloadError, ModelStoreError) as exc:
        raise refused(previous, exc) from exc
    return ReloadResult(model=model_ref(serving), previous_version=previous, policy=policy_of(policy))


@router.get("/versions", response_model=StoreVersions)
async def versions(state: StateDep) -> StoreVersions:
    """Versions in the store, the one being served, the policy choosing it, and refused ones."""
    try:
        policy = await state.manager.policy()
    except ModelStoreError as exc:
        raise ApiError(409, str(exc)) from exc
    return StoreVersions(
        serving=model_ref(state.holder.current),
        available=state.manager.store.versions(),
        policy=policy_of(policy),
        refused=state.manager.refused,
    )
