"""The ceiling: FastAPI under the same uvicorn settings, receiving the same upload, doing no work.

uvicorn bench.empty_app:app
"""

from __future__ import annotations

from fastapi import FastAPI, Request

app = FastAPI()

ANSWER = {"prediction": 0, "confidence": 1.0, "probabilities": [1.0] + [0.0] * 9}


@app.post("/predict")
async def predict(request: Request) -> dict[str, object]:
    """Parse the multipart body like the real route, then answer a constant."""
    form = await request.form()
    await form["file"].read()  # type: ignore[union-attr]
    return ANSWER


@app.get("/readyz")
def ready() -> dict[str, str]:
    return {"status": "ready"}
