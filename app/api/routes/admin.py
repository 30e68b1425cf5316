"""Operator routes, behind a bearer token (MNIST_ADMIN_TOKEN); without one they do not exist."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError

from app.api.deps import DATABASE_RETRY_SECONDS, RecordsDep, StateDep, in_database
from app.api.errors import ApiError
from app.api.responses import model_ref, policy_of
from app.api.schemas import DeletedPredictions, ErrorBody, ModelRef, Policy
from app.records.rollouts import State as RolloutState
from app.records.writer import delete_between
from app.serving.model import ServingModel
from app.serving.state import ServiceState
from app.serving.versions import ReloadError
from model_store.pins import Routing
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


async def operator_decided(
    state: ServiceState, decided: RolloutState, reason: str, pinned: int | None = None
) -> None:
    """Under MNIST_ROLLOUT=auto, an operator's change ends a running automatic canary, recorded in
    its history as the operator's decision, before the store changes."""
    if state.rollout is None:
        return
    try:
        await state.rollout.operator_ended(decided, reason, pinned)
    except SQLAlchemyError as exc:
        raise ApiError(
            503,
            "the rollout's history cannot be written (its database is unreachable); nothing "
            "changed, retry shortly",
            {"Retry-After": str(DATABASE_RETRY_SECONDS)},
        ) from exc


async def switched(state: ServiceState, change: Callable[[], Awaitable[ServingModel]]) -> ReloadResult:
    """Change the default version; refused (409) with the old one still serving if it fails."""
    previous = state.holder.current.version
    try:
        serving = await change()
        policy = await state.manager.policy()
    except (ReloadError, ModelStoreError) as exc:
        raise refused(previous, exc) from exc
    return ReloadResult(model=model_ref(serving), previous_version=previous, policy=policy_of(policy))


@router.post("/reload", response_model=ReloadResult, responses=CONFLICT)
async def reload(state: StateDep, request: Request, body: ReloadRequest | None = None) -> ReloadResult:
    """With a version: pin it. The pin is kept in the store, so every worker switches to it (within
    MNIST_RELOAD_POLL_SECONDS) and it survives restarts, until `DELETE /admin/pin`. Without one:
    look at the store now and serve what the policy says. In-flight requests finish on the old
    version; one that fails to load or validate is refused (409) and the current one keeps serving.
    """
    version = body.version if body is not None else None
    if version is not None:
        pinned_by = f"admin API (request {request.state.request_id})"
        await operator_decided(state, "stopped", f"the operator pinned version {version}", pinned=version)
        return await switched(state, lambda: state.manager.pin(version, pinned_by))
    return await switched(state, state.manager.switch_to)


@router.delete("/pin", response_model=ReloadResult, responses=CONFLICT)
async def unpin(state: StateDep) -> ReloadResult:
    """Drop the pin: every worker follows the newest version again."""
    return await switched(state, state.manager.follow_newest)


class RoutingRequest(BaseModel):
    mode: Literal["canary", "shadow"] = Field(
        description="canary: the candidate answers a share of clients; shadow: it answers none, "
        "it runs on a copy of the traffic and is compared with the default"
    )
    version: int = Field(ge=1, description="the candidate, loaded beside the default")
    percent: float = Field(10.0, ge=0.0, le=100.0, description="canary only: share of clients it answers")


class RoutingResult(BaseModel):
    routing: Routing | None = Field(description="the canary or shadow in force; null: none")


@router.put("/routing", response_model=RoutingResult, responses=CONFLICT)
async def start_routing(state: StateDep, request: Request, body: RoutingRequest) -> RoutingResult:
    """Start or change a canary or a shadow. Kept in the store beside the pin: every worker follows
    it (within MNIST_RELOAD_POLL_SECONDS), and restarts keep it, until promoted or rolled back."""
    by = f"admin API (request {request.state.request_id})"
    percent = body.percent if body.mode == "canary" else 0.0
    await operator_decided(state, "stopped", f"the operator routed version {body.version} ({body.mode})")
    try:
        routing = await state.manager.route(body.mode, body.version, percent, by)
    except (ReloadError, ModelStoreError) as exc:
        raise ApiError(409, f"routing refused: {exc}") from exc
    return RoutingResult(routing=routing)


@router.post("/routing/promote", response_model=ReloadResult, responses=CONFLICT)
async def promote(state: StateDep, request: Request) -> ReloadResult:
    """The candidate becomes the default version (pinned, as POST /admin/reload does) and the
    canary or shadow ends."""
    by = f"admin API promote (request {request.state.request_id})"
    if state.manager.routing is not None:
        await operator_decided(state, "promoted", "the operator promoted it")
    return await switched(state, lambda: state.manager.promote(by))


@router.delete("/routing", response_model=RoutingResult, responses=CONFLICT)
async def rollback(state: StateDep) -> RoutingResult:
    """Roll back: end the canary or shadow; every request goes to the default version again."""
    if state.manager.routing is not None:
        await operator_decided(state, "rolled_back", "the operator rolled it back")
    try:
        await state.manager.rollback()
    except (ReloadError, ModelStoreError) as exc:
        raise ApiError(409, f"rollback refused: {exc}") from exc
    return RoutingResult(routing=state.manager.routing)


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


@router.delete("/predictions", response_model=DeletedPredictions)
async def delete_predictions(
    records: RecordsDep,
    before: Annotated[
        datetime | None, Query(description="delete answers logged before this time (ISO 8601)")
    ] = None,
    after: Annotated[
        datetime | None, Query(description="delete answers logged after this time (ISO 8601)")
    ] = None,
) -> DeletedPredictions:
    """Delete logged answers (and their feedback) in a time range; one bound at least, so a typo
    never empties the log. A time without a zone is UTC."""
    if before is None and after is None:
        raise ApiError(400, "give before=, after= or both (ISO 8601 times); to delete everything, before=now")
    bounds = [None if moment is None else as_utc(moment) for moment in (after, before)]
    deleted = await in_database(delete_between, records.engine, bounds[0], bounds[1])
    return DeletedPredictions(deleted=deleted)


def as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
