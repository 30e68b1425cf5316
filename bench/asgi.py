"""CPU per request of the whole app in process: no HTTP server, no sockets, no wrk.

    python -m bench.asgi --store models --data-dir data/mnist --version 2
    python -m bench.asgi --store models --data-dir data/mnist --version 2 --repo ../old-checkout

Runs `create_app()` under its lifespan and calls `/predict` through its ASGI interface with the
benchmark's multipart PNG of test digit 128 (or `--body`), `--concurrency` calls at a time, and
prints the process's CPU time per request (every thread: the event loop, the forward pass, the log
writer), the best of `--windows` windows. The HTTP server's share is the same for any version of
the app, so this is how two versions of the code compare on a noisy machine: alternate them, one
fresh process each, for a few rounds (`--repo` imports the app from another checkout, such as a
`git worktree` of the commit before a change), and compare the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import time
from pathlib import Path
from typing import Any

BOUNDARY = b"bench-boundary"


def multipart(png: bytes) -> bytes:
    return (
        b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="file"; filename="digit.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + png + b"\r\n--" + BOUNDARY + b"--\r\n"
    )


def scope(body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predict",
        "raw_path": b"/predict",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"bench"),
            (b"content-type", b"multipart/form-data; boundary=" + BOUNDARY),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }


async def call(app: Any, body: bytes) -> None:
    """One POST through the app; raises unless it answers 200."""
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError("unreachable")

    status: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope(body), receive, send)
    if status != [200]:
        raise RuntimeError(f"/predict answered {status}")


async def cpu_per_request(app: Any, body: bytes, concurrency: int, windows: int, seconds: float) -> float:
    """The best window's process CPU microseconds per request, after a warm-up."""
    for _ in range(20):
        await asyncio.gather(*(call(app, body) for _ in range(concurrency)))
    best = float("inf")
    for _ in range(windows):
        done, cpu, started = 0, time.process_time(), time.perf_counter()
        while time.perf_counter() - started < seconds:
            await asyncio.gather(*(call(app, body) for _ in range(concurrency)))
            done += concurrency
        best = min(best, (time.process_time() - cpu) / done * 1e6)
    return best


def digit_png(data_dir: Path) -> bytes:
    from PIL import Image

    from model_store.mnist_data import load_split

    out = io.BytesIO()
    Image.fromarray(load_split(data_dir, "test").images[128]).save(out, format="PNG")
    return out.getvalue()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True, help="the MNIST files (test digit 128)")
    parser.add_argument("--version", type=int, help="default: the newest")
    parser.add_argument("--body", type=Path, help="an image file to post instead of test digit 128")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each window")
    parser.add_argument("--repo", type=Path, help="import the app from this checkout instead")
    args = parser.parse_args(argv)
    for name in ("concurrency", "windows"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    for name in ("store", "data_dir", "body", "repo"):
        path = getattr(args, name)
        if path is not None and not path.exists():
            parser.error(f"--{name.replace('_', '-')} {path}: no such file or folder")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.repo is not None:
        sys.path.insert(0, str(args.repo.resolve()))
    from app.config import Settings
    from app.main import create_app

    png = args.body.read_bytes() if args.body else digit_png(args.data_dir)
    # No access log: thousands of lines a second would only measure the terminal.
    settings = Settings(
        model_store=args.store, data_dir=args.data_dir, model_version=args.version, log_level="warning"
    )
    app = create_app(settings)

    async def run() -> float:
        async with app.router.lifespan_context(app):
            return await cpu_per_request(app, multipart(png), args.concurrency, args.windows, args.seconds)

    microseconds = asyncio.run(run())
    origin = args.repo or Path(__file__).resolve().parents[1]
    print(f"{origin}: /predict at {args.concurrency} concurrent calls: {microseconds:.0f} us CPU per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
