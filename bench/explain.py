"""What an explanation costs: `/predict` against `/predict?explain=true`, side by side in one run.

python -m bench.explain --store models --data-dir ../shared/mnist [--requests 200]

One uvicorn worker, one client, requests one after another (no concurrency: the cost of one
answer, not throughput), alternating the two kinds so machine noise hits both alike. Prints the
median and p90 of each and their ratio.
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
from PIL import Image

from bench.servers import ROOT, start_server
from model_store.mnist_data import load_split


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path(os.environ.get("MNIST_MODEL_STORE", "models")))
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MNIST_DATA_DIR", "data/mnist")))
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args(argv)

    test = load_split(args.data_dir, "test")
    env = os.environ | {
        "MNIST_MODEL_STORE": str(args.store.resolve()),
        "MNIST_DATA_DIR": str(args.data_dir.resolve()),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": str(ROOT),
    }
    server = start_server("ours", 1, env)
    timings: dict[str, list[float]] = {"predict": [], "explain": []}
    try:
        with httpx.Client(timeout=60) as client:
            for i in range(args.requests + 10):
                buffer = io.BytesIO()
                Image.fromarray(test.images[i]).save(buffer, format="PNG")
                for kind, query in (("predict", ""), ("explain", "?explain=true")):
                    started = time.perf_counter()
                    response = client.post(f"{server.url}/predict{query}", files={"file": buffer.getvalue()})
                    elapsed = (time.perf_counter() - started) * 1000
                    response.raise_for_status()
                    if i >= 10:  # the first ones warm up (the explain graph is traced on first use)
                        timings[kind].append(elapsed)
    finally:
        server.stop()
    rows = {kind: (statistics.median(ms), statistics.quantiles(ms, n=10)[-1]) for kind, ms in timings.items()}
    for kind, (median, p90) in rows.items():
        print(f"{kind:8} median {median:7.2f} ms   p90 {p90:7.2f} ms")
    print(f"explain / predict (median): {rows['explain'][0] / rows['predict'][0]:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
