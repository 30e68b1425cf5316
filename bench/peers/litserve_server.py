"""LitServe serving the bench's model file, with LitServe's own batching.

BENCH_MODEL_PATH=models/mnist/1/model.keras BENCH_PORT=8000 BENCH_WORKERS=1 \
    python -m bench.peers.litserve_server

POST /predict takes the multipart upload (field `file`, a PNG) and answers the softmax vector and
its argmax. LitServe 0.2 takes the batching settings on the LitAPI (on LitServer they are
deprecated). It decodes each request in the inference worker, stacks up to MAX_BATCH of them
(waiting at most BATCH_TIMEOUT for more) and calls `predict` once per batch.
"""

from __future__ import annotations

import os

import litserve as ls
import numpy as np

from bench.peers.model import MAX_BATCH, PORT_ENV, answer, decode_png, load_forward, workers

# LitServe's examples wait 5-50 ms for a batch to fill; the service waits for nothing. 0 would make
# LitServe poll its queue without blocking, taking a core from the HTTP side on a 2-core machine, so
# 1 ms: the shortest wait that blocks. Measured here at 1 connection: p50 2.5-3 ms, against 7.5 ms
# at 5 ms and 12 ms at 10 ms; at 64 connections no difference above the noise. Batches still fill
# under load, because requests queue while a batch computes.
BATCH_TIMEOUT = 0.001


class DigitAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.forward = load_forward()

    # Unannotated on purpose: LitServe reads this parameter's annotation to pick the request type,
    # and without one hands over the parsed form.
    def decode_request(self, request) -> np.ndarray:
        return decode_png(request["file"].file.read())

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return list(output)

    def encode_response(self, output: np.ndarray) -> dict[str, object]:
        return answer(output)


def main() -> None:
    api = DigitAPI(max_batch_size=MAX_BATCH, batch_timeout=BATCH_TIMEOUT)
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=workers())
    server.run(host="127.0.0.1", port=int(os.environ[PORT_ENV]), generate_client_file=False)


if __name__ == "__main__":
    main()
