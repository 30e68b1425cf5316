"""The API-key check in front of the inference routes (off unless MNIST_API_KEYS_FILE is set)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.api.deps import StateDep
from app.api.errors import ApiError
from app.operations.api_keys import KeyRefusedError, admit

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
