"""BentoML 1.4 serving the bench's model file, with BentoML's adaptive batching.

BENCH_MODEL_PATH=models/mnist/1/model.keras BENCH_WORKERS=1 \
    bentoml serve bench.peers.bentoml_service:DigitService --port 8000

POST /predict takes a multipart upload (field `images`, one PNG or several) and answers one softmax
vector and argmax per image. The route is batchable: BentoML's dispatcher merges concurrent
requests into one call of up to MAX_BATCH images, within MAX_LATENCY_MS.
"""

from __future__ import annotations

import bentoml
import numpy as np
from PIL import Image

from bench.peers.model import MAX_BATCH, answer, load_forward, workers

# BentoML answers 503 when it expects a request to miss this bound; its documentation's examples
# use a second, far above what this model needs, so it never rejects and only caps the waiting.
MAX_LATENCY_MS = 1000


@bentoml.service(workers=workers())
class DigitService:
    def __init__(self) -> None:
        self.forward = load_forward()

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=MAX_LATENCY_MS)
    def predict(self, images: list[Image.Image]) -> list[dict[str, object]]:
        pixels = np.stack([np.asarray(image.convert("L"), dtype=np.uint8) for image in images])
        return [answer(row) for row in self.forward(pixels)]
