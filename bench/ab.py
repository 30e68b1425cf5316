"""Two checkouts of the service over HTTP, side by side: alternating wrk runs against each.

    git worktree add ../before <commit>
    python -m bench.ab --store models --data-dir data/mnist --before ../before --connections 1 64

For each round and connection count it starts the other checkout's service and this one's (same
store, version and workers; which goes first alternates between rounds), warms each up with wrk at
64 connections, then runs wrk for `--seconds` posting test digit 128 as a multipart PNG, and prints
req/s, p50 and p99 of every run and the medians. On a shared machine the absolute numbers drift from minute to
minute; runs next to each other, in both orders, are what compare two versions of the code.
`--env NAME=VALUE` sets a service setting for both (`--env MNIST_LOG_LEVEL=warning`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from bench.asgi import digit_png
from bench.servers import ROOT, Load, service_env, start_server, wrk


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True, help="the MNIST files (test digit 128)")
    parser.add_argument("--before", type=Path, required=True, help="the other checkout, e.g. a git worktree")
    parser.add_argument("--version", type=int, help="default: the newest")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3, help="seconds at 64 connections before each run")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    for name in ("workers", "rounds", "seconds", "warmup"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if any(c < 1 for c in args.connections):
        parser.error("--connections must be at least 1")
    for name in ("store", "data_dir", "before"):
        if not getattr(args, name).exists():
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: no such file or folder")
    if not (args.before / "app" / "main.py").is_file():
        parser.error(f"--before {args.before}: not a checkout of this project (no app/main.py)")
    if bad := [item for item in args.env if "=" not in item]:
        parser.error(f"--env {bad[0]}: expected NAME=VALUE")
    return args


def measure(root: Path, env: dict[str, str], args: argparse.Namespace, connections: int, body: Path) -> Load:
    server = start_server("ours", args.workers, env, root=root)
    try:
        url = f"{server.url}/predict"
        wrk(url, 64, args.warmup, body, "multipart")
        return wrk(url, connections, args.seconds, body, "multipart")
    finally:
        server.stop()


def describe(load: Load) -> str:
    return (
        f"{load.requests_per_second:7,.0f} req/s, p50 {load.p50_ms:.2f} ms, p99 {load.p99_ms:.2f} ms, "
        f"errors {load.errors}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    body = Path(tempfile.mkdtemp(prefix="bench-ab-")) / "digit.png"
    body.write_bytes(digit_png(args.data_dir))
    settings = dict(item.split("=", 1) for item in args.env)
    env = service_env(args.store, args.data_dir, MNIST_MODEL_VERSION=str(args.version or ""), **settings)
    checkouts = {"before": args.before.resolve(), "this": ROOT}
    for connections in args.connections:
        loads: dict[str, list[Load]] = {name: [] for name in checkouts}
        for round_number in range(args.rounds):
            order = list(checkouts) if round_number % 2 == 0 else list(reversed(checkouts))
            for name in order:
                load = measure(checkouts[name], env, args, connections, body)
                loads[name].append(load)
                print(f"c={connections} round {round_number + 1} {name:6}: {describe(load)}", flush=True)
        for name, runs in loads.items():
            median = Load(
                statistics.median(run.requests_per_second for run in runs),
                statistics.median(run.p50_ms for run in runs),
                statistics.median(run.p99_ms for run in runs),
                sum(run.errors for run in runs),
            )
            print(f"c={connections} median  {name:6}: {describe(median)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
