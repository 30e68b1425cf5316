"""What each part of the service costs a request over HTTP: the service without it, beside the empty endpoint.

    python -m bench.ablate --store models --data-dir data/mnist --version 2

Starts the empty endpoint (bench/empty_app.py), the whole service, the service without each part of
`bench/ablated_app.PARTS` in turn, and the service without all of them: all up at once, each with
`--workers` workers. Then, round after round (the order reversed every other round), it drives each
in turn with wrk at `--connections`, posting test digit 128 as a multipart PNG, and prints each
one's req/s per round, its median p50 and its median ratio to the empty endpoint over the same
rounds. Taking turns keeps a slow minute on a shared machine from landing on one side of a ratio
only.

What a part's removal buys bounds what making that part cheaper could; the last row is the most the
service's own route, doing no inference and no bookkeeping, gets of the empty endpoint.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from bench.ablated_app import PARTS, WITHOUT_VARIABLE
from bench.asgi import digit_png
from bench.servers import Load, Server, service_env, start_server, wrk

WHOLE = "the whole service"
EMPTY = "empty endpoint"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True, help="the MNIST files (test digit 128)")
    parser.add_argument("--version", type=int, help="default: the newest")
    parser.add_argument("--without", nargs="+", default=list(PARTS), metavar="PART", help=", ".join(PARTS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3, help="seconds of load on each server first")
    args = parser.parse_args(argv)
    for name in ("workers", "connections", "rounds", "seconds", "warmup"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if unknown := [part for part in args.without if part not in PARTS]:
        parser.error(f"--without {unknown[0]}: not a part; choose from {', '.join(PARTS)}")
    for name in ("store", "data_dir"):
        if not getattr(args, name).exists():
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: no such file or folder")
    return args


def variants(parts: list[str]) -> dict[str, list[str]]:
    """Each row's parts taken out: none, each one alone, then all of them."""
    rows: dict[str, list[str]] = {WHOLE: []} | {f"without {part}": [part] for part in parts}
    if len(parts) > 1:
        rows["without all of them"] = parts
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    body = Path(tempfile.mkdtemp(prefix="bench-ablate-")) / "digit.png"
    body.write_bytes(digit_png(args.data_dir))
    env = service_env(args.store, args.data_dir, MNIST_MODEL_VERSION=str(args.version or ""))
    servers: dict[str, Server] = {}
    try:
        servers[EMPTY] = start_server("empty", args.workers, env)
        for name, parts in variants(args.without).items():
            servers[name] = start_server("ablated", args.workers, env | {WITHOUT_VARIABLE: ",".join(parts)})
        for server in servers.values():
            wrk(f"{server.url}/predict", args.connections, args.warmup, body, "multipart")
        loads: dict[str, list[Load]] = {name: [] for name in servers}
        for round_number in range(args.rounds):
            order = list(servers) if round_number % 2 == 0 else list(reversed(servers))
            for name in order:
                load = wrk(f"{servers[name].url}/predict", args.connections, args.seconds, body, "multipart")
                if load.errors:
                    raise RuntimeError(f"{name}: {load.errors} failed requests; see its log")
                loads[name].append(load)
                print(f"round {round_number + 1}, {name}: {load.requests_per_second:,.0f} req/s", flush=True)
    finally:
        for server in servers.values():
            server.stop()
    print(f"\n{args.workers} worker(s), {args.connections} connections, ", end="")
    print(f"{args.rounds} rounds of {args.seconds} s\n")
    print("| server | req/s by round | median p50 | median ratio to the empty endpoint |")
    print("| --- | --- | ---: | ---: |")
    for name, runs in loads.items():
        pairs = zip(runs, loads[EMPTY], strict=True)
        ratio = statistics.median(run.requests_per_second / empty.requests_per_second for run, empty in pairs)
        rates = ", ".join(f"{run.requests_per_second:,.0f}" for run in runs)
        p50 = statistics.median(run.p50_ms for run in runs)
        print(f"| {name} | {rates} | {p50:.2f} ms | {ratio:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
