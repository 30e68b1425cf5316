"""What an explanation costs and how faithful it is, by each method, side by side.

python -m bench.explain --store models --data-dir data/mnist [--version N] [--requests 200]

Cost: one uvicorn worker per explain method (integrated gradients, occlusion), one client, requests
one after another (no concurrency: the cost of one answer, not throughput), taking turns so machine
noise hits every kind alike: the median and p90 of `/predict` and of `/predict?explain=true`.

Faithfulness (`--digits`, in process): the deletion curve. Each test digit's pixels are blacked out
5 % of the image at a time, in the order its map ranks them, and again in a random order of its ink;
the area under the mean probability of the explained digit, map over random, is lower for a map
that finds the evidence (1.0: no better than chance).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from app.serving.explain import METHODS, Attribution, ExplainService
from app.serving.model import ServingModel
from bench.servers import service_env, start_server
from model_store.mnist_data import load_split
from model_store.preprocessing import to_model_input
from model_store.store import ModelStore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path(os.environ.get("MNIST_MODEL_STORE", "models")))
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MNIST_DATA_DIR", "data/mnist")))
    parser.add_argument("--version", type=int, help="the version to serve (default: the newest)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--digits", type=int, default=500, help="test digits for faithfulness (0: skip)")
    args = parser.parse_args(argv)

    test = load_split(args.data_dir, "test")
    env = service_env(args.store, args.data_dir, MNIST_MODEL_VERSION=str(args.version or ""))
    servers = []
    try:
        for method in METHODS:
            servers.append(start_server("ours", 1, env | {"MNIST_EXPLAIN_METHOD": method}))
        kinds = [("predict", servers[0].url, "")]
        kinds += [
            (method, server.url, "?explain=true") for method, server in zip(METHODS, servers, strict=True)
        ]
        timings: dict[str, list[float]] = {kind: [] for kind, _, _ in kinds}
        with httpx.Client(timeout=60) as client:
            for i in range(args.requests + 10):
                buffer = io.BytesIO()
                Image.fromarray(test.images[i]).save(buffer, format="PNG")
                for kind, url, query in kinds:
                    started = time.perf_counter()
                    response = client.post(f"{url}/predict{query}", files={"file": buffer.getvalue()})
                    elapsed = (time.perf_counter() - started) * 1000
                    response.raise_for_status()
                    if i >= 10:  # the first ones warm up (the explain graph is traced on first use)
                        timings[kind].append(elapsed)
    finally:
        for server in servers:
            server.stop()
    rows = {kind: (statistics.median(ms), statistics.quantiles(ms, n=10)[-1]) for kind, ms in timings.items()}
    for kind, (median, p90) in rows.items():
        ratio = median / rows["predict"][0]
        print(f"{kind:22} median {median:7.2f} ms   p90 {p90:7.2f} ms   {ratio:5.1f}x a prediction")
    if args.digits:
        for name, area in faithfulness(args.store, args.version, test.images[: args.digits]).items():
            print(f"{name:22} deletion-curve area, map / random ink: {area:.3f} ({args.digits} test digits)")
    return 0


def faithfulness(store: Path, version: int | None, images: np.ndarray) -> dict[str, float]:
    serving = ServingModel.compile(ModelStore(store).load(version))
    ratios: dict[str, float] = {}
    for method in METHODS:
        explainer = ExplainService(1, method).explainer(serving)
        inputs = to_model_input(images, serving.loaded.metadata.input)
        maps = [
            found
            for start in range(0, len(images), 50)
            for found in explainer.explain(inputs[start : start + 50])
        ]
        by_map, at_random = deletion_curves(serving, maps, images)
        ratios[method] = float(np.trapezoid(by_map) / np.trapezoid(at_random))
    return ratios


def deletion_curve(
    serving: ServingModel, images: np.ndarray, digits: np.ndarray, orders: np.ndarray, steps: int = 20
) -> np.ndarray:
    """Mean probability of each image's digit as its pixels are blacked out in `orders`, 5 % a step."""
    curve = []
    for step in range(steps + 1):
        cut = images.reshape(len(images), -1).copy()
        count = round(784 * step / steps / 4)  # up to a quarter of the pixels: about all the ink
        np.put_along_axis(cut, orders[:, :count], 0, axis=1)
        probabilities = serving.forward(cut.reshape(images.shape))
        curve.append(probabilities[np.arange(len(images)), digits].mean())
    return np.array(curve)


def ink_first_at_random(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    flat = image.reshape(-1)
    return np.concatenate([rng.permutation(np.flatnonzero(flat > 0)), np.flatnonzero(flat == 0)])


def deletion_curves(
    serving: ServingModel, maps: list[Attribution], images: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(by the maps' ranking, by random ink) deletion curves of `images` (uint8, N x 28 x 28)."""
    digits = np.array([found.digit for found in maps])
    ranked = np.argsort(-np.stack([found.attributions for found in maps]).reshape(len(images), -1), axis=1)
    rng = np.random.default_rng(seed)
    # The fair random baseline deletes ink only: blacking out background pixels changes nothing.
    random_orders = np.stack([ink_first_at_random(image, rng) for image in images])
    return deletion_curve(serving, images, digits, ranked), deletion_curve(
        serving, images, digits, random_orders
    )


if __name__ == "__main__":
    sys.exit(main())
