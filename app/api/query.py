"""Query parameters read through one pydantic model, for the hot routes.

FastAPI validates each declared query parameter inside its dependency solving, a large share of
`/predict`'s CPU (docs/performance.md); validating the query string against one model is a single
call. The same model documents the parameters in the OpenAPI schema,
and a bad value gets the same 422 sentence as anywhere else in the service.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from app.api.errors import ApiError, describe_errors

Options = TypeVar("Options", bound=BaseModel)


def parse_query(model: type[Options], request: Request) -> Options:
    """The request's query string as `model`, or 422 naming each bad parameter."""
    try:
        return model.model_validate(request.query_params)
    except ValidationError as exc:
        errors = [{**error, "loc": ("query", *error["loc"])} for error in exc.errors()]
        raise ApiError(422, describe_errors(errors)) from exc


def openapi_parameters(*models: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` declaring the `models`' fields as optional query parameters, each with the
    first of its field's `examples`."""
    properties = [item for model in models for item in model.model_json_schema()["properties"].items()]
    parameters = []
    for name, field in properties:
        description = field.pop("description", None)
        examples = field.pop("examples", None)
        field.pop("title", None)
        parameter = {"name": name, "in": "query", "required": False, "schema": field}
        if description:
            parameter["description"] = description
        if examples:
            # On the parameter: clients that fill in requests from the document (Postman) read it
            # there, not inside an `anyOf` schema (and Postman's converter drops a named `false`).
            parameter["example"] = examples[0]
        parameters.append(parameter)
    return {"parameters": parameters}
