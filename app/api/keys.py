"""The API-key check in front of the inference routes (off unless MNIST_API_KEYS_FILE is set)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.api.deps import StateDep
from app.api.errors import ApiError

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
    counter = state.metrics.api_key_requests
    presented = header_key or (credentials.credentials if credentials is not None else None)
    if not presented:
        counter.labels("", "missing").inc()
        raise ApiError(401, f"this route needs an API key: {HOW}", {"WWW-Authenticate": "Bearer"})
    name = keys.identify(presented)
    if name is None:
        counter.labels("", "refused").inc()
        raise ApiError(403, "unknown API key")
    request.state.api_key = name
    if state.rate_limiter is not None:
        wait = state.rate_limiter.acquire(name)
        if wait:
            counter.labels(name, "rate_limited").inc()
            raise ApiError(
                429,
                f"API key {name!r} is over its limit of {state.rate_limiter.rate:g} requests per second; "
                f"retry in {wait} s",
                {"Retry-After": str(wait)},
            )
    counter.labels(name, "accepted").inc()
