"""`POST /feedback`: the true label of an earlier answer, or a labelled image of one's own."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import UploadFile

from app.api.deps import RecordsDep, StateDep, in_database
from app.api.errors import ApiError
from app.api.examples import named
from app.api.schemas import (
    NOT_A_DIGIT_LABEL,
    PREDICTION_ID_EXAMPLE,
    FeedbackRecord,
    FeedbackRequest,
    Label,
    ModelRef,
    error_responses,
)
from app.api.uploads import UPLOAD_FIELD, content_type, digit_of_bytes
from app.records.feedback import StoredFeedback, record_contribution, record_feedback
from app.records.tables import NOT_A_DIGIT
from app.records.writer import PredictionLog
from app.serving.state import ServiceState

router = APIRouter(prefix="/feedback", tags=["feedback"])

LABEL_FIELD = "label"
CONTRIBUTION_BODY = {
    "type": "object",
    "required": [UPLOAD_FIELD, LABEL_FIELD],
    "properties": {
        UPLOAD_FIELD: {
            "type": "string",
            "format": "binary",
            "description": "the image, as for POST /predict",
        },
        LABEL_FIELD: {"type": "string", "description": "0-9 or not_a_digit", "example": "7"},
    },
}
BODY = {
    "requestBody": {
        "required": True,
        # The contribution first: its example runs anywhere, where a prediction id must be real.
        "content": {
            "multipart/form-data": {"schema": CONTRIBUTION_BODY},
            "application/json": {
                "schema": FeedbackRequest.model_json_schema(),
                "examples": named("the answer was a 7", {"prediction_id": PREDICTION_ID_EXAMPLE, "label": 7}),
            },
        },
    }
}
ERRORS = error_responses(
    {
        200: "feedback given again on this answer: its label replaced",
        400: "not an image, corrupt, or empty (a contribution)",
        404: "no answer with this id (unknown, or pruned by retention)",
        413: "image over the configured limit",
        415: "send application/json, or multipart/form-data for a contribution",
        422: "a label other than 0-9 or not_a_digit, or a malformed body",
        503: "the database is unreachable; retry after the Retry-After seconds",
    }
)
ERRORS[200] = {"model": FeedbackRecord, "description": ERRORS[200]["description"]}
LABEL = TypeAdapter[Label](Label)


def stored_label(label: Label) -> int:
    return NOT_A_DIGIT if label == NOT_A_DIGIT_LABEL else int(label)


def record_of(stored: StoredFeedback) -> FeedbackRecord:
    return FeedbackRecord(
        prediction_id=stored.prediction_id,
        label=NOT_A_DIGIT_LABEL if stored.label == NOT_A_DIGIT else stored.label,
        predicted=stored.predicted,
        correct=stored.correct,
        model=ModelRef(name=stored.model_name, version=stored.model_version),
        created_at=stored.created_at,
        updated_at=stored.updated_at,
    )


@router.post("", response_model=FeedbackRecord, status_code=201, responses=ERRORS, openapi_extra=BODY)
async def feedback(
    request: Request, response: Response, state: StateDep, records: RecordsDep
) -> FeedbackRecord:
    """Tell the service the true label of an answer: JSON `{"prediction_id", "label"}` (201; 200 when
    it replaces an earlier label), or a multipart `file` with its `label` and no earlier answer
    (a contribution, normalised as `/predict` normalises it; 201). Committed before the answer."""
    kind = content_type(request)
    if kind == "multipart/form-data":
        stored = await contribution(request, state, records)
    elif kind in ("application/json", ""):
        try:
            body = FeedbackRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from exc
        records.flush_soon()  # the answer may still be queued in this worker
        found = await in_database(
            record_feedback, records.engine, body.prediction_id, stored_label(body.label)
        )
        if found is None:
            raise ApiError(404, f"no answer with id {body.prediction_id} (unknown, or past retention)")
        stored = found
    else:
        raise ApiError(
            415,
            f"unsupported content type {kind!r}: send application/json, or "
            f"multipart/form-data with fields '{UPLOAD_FIELD}' and '{LABEL_FIELD}'",
        )
    if not stored.first:
        response.status_code = 200
    outcome = "contribution" if stored.correct is None else ("correct" if stored.correct else "wrong")
    state.metrics.feedback.labels(str(stored.model_version), outcome).inc()
    return record_of(stored)


async def contribution(request: Request, state: ServiceState, records: PredictionLog) -> StoredFeedback:
    """A labelled image of the caller's own, stored as an answer of route `feedback` with its label."""
    async with request.form(max_files=1, max_fields=2) as form:
        upload, label_text = form.get(UPLOAD_FIELD), form.get(LABEL_FIELD)
        if not isinstance(upload, UploadFile) or not isinstance(label_text, str):
            raise ApiError(
                422,
                f"a contribution needs multipart fields '{UPLOAD_FIELD}' (a file) "
                f"and '{LABEL_FIELD}' (0-9 or not_a_digit)",
            )
        data = await upload.read()
    try:
        label = LABEL.validate_python(
            int(label_text) if label_text.strip().isdecimal() else label_text.strip()
        )
    except ValidationError as exc:
        raise ApiError(422, f"label {label_text!r} is not 0-9 or not_a_digit") from exc
    digit = await digit_of_bytes(data, state.settings.max_image_pixels)
    model = state.holder.current
    return await in_database(
        record_contribution,
        records.engine,
        digit.pixels,
        stored_label(label),
        model.name,
        model.version,
        getattr(request.state, "api_key", None),
    )
