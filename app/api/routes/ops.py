"""`/metrics`: the Prometheus metrics of this worker."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.deps import StateDep

router = APIRouter(tags=["operations"])


EXAMPLE = """# TYPE mnist_http_requests_total counter
mnist_http_requests_total{method="POST",route="/predict",status="200"} 1042.0
mnist_predictions_total{digit="8"} 97.0
mnist_model_loaded{name="mnist",version="3"} 1.0
"""


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"example": EXAMPLE}}}},
)
def metrics(state: StateDep) -> Response:
    """Prometheus metrics: requests and latency per route and status, predicted digits, batch sizes,
    queue delay, the model version served, load failures and reloads."""
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
