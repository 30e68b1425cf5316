"""One error shape for the whole service: `{"detail": "<what went wrong, for a person>"}`.

Routes raise `ApiError` (or let FastAPI raise its own); the handlers here turn every failure into
that shape. The KServe v2 routes answer `{"error": "..."}`, as that protocol requires.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

V2_PREFIX = "/v2"
# FastAPI documents every 422 as this component, a list of pydantic errors; ours is one sentence.
VALIDATION_SCHEMA = "HTTPValidationError"


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


def describe_errors(errors: Sequence[Any]) -> str:
    """'query parameter count: Input should be less than or equal to 100', one clause per problem
    in pydantic's list of errors (located by FastAPI: `("query", "count")`)."""
    parts = []
    for error in errors:
        location = [str(part) for part in error.get("loc", ())]
        where = f"{location[0]} parameter {'.'.join(location[1:])}" if len(location) > 1 else "request"
        if location and location[0] == "body":
            where = f"body field {'.'.join(location[1:])}" if len(location) > 1 else "request body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def error_schema(key: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {key: {"type": "string", "title": key.title()}},
        "required": [key],
    }


def document_error_shape(app: FastAPI) -> None:
    """Make /openapi.json describe the 422 body the handlers below really send, not FastAPI's list."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        components = schema.get("components", {}).get("schemas", {})
        if VALIDATION_SCHEMA in components:
            components[VALIDATION_SCHEMA] = {"title": VALIDATION_SCHEMA, **error_schema("detail")}
        for path, operations in schema.get("paths", {}).items():
            if not path.startswith(V2_PREFIX):
                continue
            for operation in operations.values():
                if not isinstance(operation, dict):  # a path item's shared "parameters" list
                    continue
                for body in operation.get("responses", {}).get("422", {}).get("content", {}).values():
                    body["schema"] = error_schema("error")
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_error_handlers(app: FastAPI) -> None:
    document_error_shape(app)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc.status_code, exc.detail, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(request, exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request, 422, describe_errors(exc.errors()))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, 500, "internal error; the service logged the details")
