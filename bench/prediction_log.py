"""What keeping every answer costs: `/predict` with the prediction log off, on SQLite, and on
PostgreSQL, in one run, as ratios of throughput to the log off (the target: at least 0.9x).

    python -m bench.prediction_log --store models --data-dir data/mnist \\
        --postgres-url postgresql+psycopg://user@127.0.0.1:5432/bench --seconds 8 --rounds 3

For each round the three variants take turns (the order rotates between rounds), each a fresh
server of `--workers` workers warmed up with wrk at the measured connection count, then wrk for
`--seconds` posting test digit 128 as a multipart PNG. The SQLite file is new for each server;
the PostgreSQL database is emptied before each. It writes the medians and ratios to
bench/results/prediction-log.md (and prints every run). Without `--postgres-url` PostgreSQL is
left out.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

from sqlalchemy import create_engine, text

from bench.digits import encode
from bench.processes import service_env
from bench.servers import ROOT, Load, start_server, wrk
from model_store.mnist_data import load_split

RESULTS = ROOT / "bench" / "results" / "prediction-log.md"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True, help="the MNIST files (test digit 128)")
    parser.add_argument("--postgres-url", help="an empty PostgreSQL database (emptied before each server)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2, help="seconds of load before each measured run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    for name in ("workers", "connections", "rounds", "seconds", "warmup"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    for name in ("store", "data_dir"):
        if not getattr(args, name).exists():
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: no such file or folder")
    return args


def empty_postgres(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS feedback, predictions, alembic_version"))
    engine.dispose()


def variants(args: argparse.Namespace) -> dict[str, dict[str, str]]:
    found = {
        "off": {"MNIST_PREDICTION_LOG": "off"},
        "sqlite": {"MNIST_PREDICTION_LOG": "on", "MNIST_DATABASE_URL": ""},  # a new file per server
    }
    if args.postgres_url:
        found["postgresql"] = {"MNIST_PREDICTION_LOG": "on", "MNIST_DATABASE_URL": args.postgres_url}
    return found


def measure(name: str, settings: dict[str, str], args: argparse.Namespace, body: Path) -> Load:
    if name == "sqlite":
        settings = settings | {
            "MNIST_DATABASE_URL": f"sqlite:///{tempfile.mkdtemp(prefix='bench-log-')}/log.db"
        }
    elif name == "postgresql":
        empty_postgres(settings["MNIST_DATABASE_URL"])
    env = service_env(args.store, args.data_dir, log_level="warning") | settings
    server = start_server("ours", args.workers, env)
    try:
        url = f"{server.url}/predict"
        wrk(url, args.connections, args.warmup, body, "multipart")
        return wrk(url, args.connections, args.seconds, body, "multipart")
    finally:
        server.stop()


def median(runs: list[Load]) -> Load:
    return Load(
        statistics.median(run.requests_per_second for run in runs),
        statistics.median(run.p50_ms for run in runs),
        statistics.median(run.p99_ms for run in runs),
        sum(run.errors for run in runs),
    )


def render(medians: dict[str, Load], args: argparse.Namespace, command: str) -> str:
    off = medians["off"].requests_per_second
    lines = [
        "# The prediction log's cost on `/predict`",
        "",
        f"`{command}`",
        "",
        f"{args.connections} connections, {args.workers} workers, {args.rounds} rounds of {args.seconds} s "
        f"(medians), {os.cpu_count()} cores, Python {platform.python_version()}. The variants take turns "
        "in each round, so drift on a shared machine falls on all of them.",
        "",
        "| log | req/s | p50 ms | p99 ms | errors | throughput vs off |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, load in medians.items():
        lines.append(
            f"| {name} | {load.requests_per_second:,.0f} | {load.p50_ms:.2f} | {load.p99_ms:.2f} | "
            f"{load.errors} | {load.requests_per_second / off:.2f}x |"
        )
    lines += ["", "Target: at least 0.90x with the log on, on either database.", ""]
    return "\n".join(lines)


def shown_command(args: argparse.Namespace) -> str:
    """The command as anyone reruns it: the store, data and database named, not where they were."""
    parts = ["python -m bench.prediction_log --store models --data-dir data/mnist"]
    if args.postgres_url:
        parts.append("--postgres-url postgresql+psycopg://...")
    parts.append(
        f"--workers {args.workers} --connections {args.connections} --rounds {args.rounds} "
        f"--seconds {args.seconds} --warmup {args.warmup}"
    )
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    body = Path(tempfile.mkdtemp(prefix="bench-log-")) / "digit.png"
    body.write_bytes(encode(load_split(args.data_dir, "test").images[128]))
    chosen = variants(args)
    runs: dict[str, list[Load]] = {name: [] for name in chosen}
    names = list(chosen)
    for round_number in range(args.rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            load = measure(name, chosen[name], args, body)
            runs[name].append(load)
            print(
                f"round {round_number + 1} {name:10}: {load.requests_per_second:7,.0f} req/s, "
                f"p50 {load.p50_ms:.2f} ms, p99 {load.p99_ms:.2f} ms, errors {load.errors}",
                flush=True,
            )
    medians = {name: median(loads) for name, loads in runs.items()}
    report = render(medians, args, shown_command(args))
    args.out.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
