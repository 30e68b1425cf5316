"""One error shape for the whole service: `{"detail": "<what went wrong, for a person>"}`.

Routes raise `ApiError` (or let FastAPI raise its own); the handlers here turn every failure into
that shape. The KServe v2 routes answer `{"error": "..."}`, as that protocol requires.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

V2_PREFIX = "/v2"


class ApiError(Exception):
    def __init__(self, status_code: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers


def error_response(
    request: Request, status_code: int, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    key = "error" if request.url.path.startswith(V2_PREFIX) else "detail"
    return JSONResponse({key: detail}, status_code=status_code, headers=headers)


def describe_validation_error(exc: RequestValidationError) -> str:
    """'query parameter count: Input should be less than or equal to 100', one clause per problem."""
    parts = []
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ())]
        where = f"{location[0]} parameter {'.'.join(location[1:])}" if len(location) > 1 else "request"
        if location and location[0] == "body":
            where = f"body field {'.'.join(location[1:])}" if len(location) > 1 else "request body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc.status_code, exc.detail, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(request, exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request, 422, describe_validation_error(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, 500, "internal error; the service logged the details")
