"""The whole loop against a live service: users' corrections → training → the gate → a canary →
promotion, with nobody in between.

python -m bench.loop --data-dir data/mnist

1. A "current" model: a short `cnn` run (`mnist-train --preset cnn --limit 20000 --epochs 3`), or
   the version `--store` already serves.
2. The service starts with `MNIST_ROLLOUT=auto` and its prediction log in a database.
3. Users upload typeset digits (`training.populations`): a writing style MNIST lacks, drawn from
   fonts no training step of the `cnn` ever draws a digit from, so the current model has never seen
   one. Part of the answers get feedback with the true digit, through `POST /feedback`.
4. `mnist-train --preset cnn --feedback --fine-tune-from serving` reads the corrections from the
   service's database, fine-tunes the served version, proves the candidate against it (the gate)
   and publishes it.
5. The service makes it a canary by itself. Traffic goes on, half typeset digits of a third draw and
   half MNIST test digits, each answer followed by its true label, until the service promotes the
   candidate or rolls it back.
6. Accuracy on typeset digits no step ever saw (the "unseen" draw) and on MNIST's test set, served
   before and after, both asked of the live service.

Writes bench/results/loop.md and .json.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.digits import encode
from bench.loop_offline import train
from bench.processes import service_env
from bench.report import write_results
from bench.servers import Server, start_server
from model_store.mnist_data import load_split
from model_store.store import ModelStore
from training.populations import draw

ROOT = Path(__file__).resolve().parents[1]
PROG = "python -m bench.loop"
RESULTS = ROOT / "bench" / "results"
ADMIN_TOKEN = uuid.uuid4().hex
CONCURRENCY = 16  # users uploading at once
ROUND = 200  # answers between two looks at the rollout
SETTLED_STREAK = 20  # answers in a row from one version: every worker serves it


@dataclass
class Timeline:
    """Seconds since the first correction was given."""

    first_correction: float = 0.0
    events: dict[str, float] = field(default_factory=dict)

    def mark(self, event: str) -> None:
        self.events[event] = round(time.perf_counter() - self.first_correction, 1)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MNIST_DATA_DIR", "data/mnist")))
    parser.add_argument(
        "--store", type=Path, help="start from the version this store serves (default: train one)"
    )
    parser.add_argument("--database-url", help="the prediction log (default: SQLite in a temporary folder)")
    parser.add_argument("--workers", type=int, default=2, help="service workers")
    parser.add_argument("--uploads", type=int, default=1000, help="typeset digits users upload first")
    parser.add_argument("--corrections", type=int, default=600, help="of which users give the true digit")
    parser.add_argument("--unseen", type=int, default=2000, help="typeset digits never uploaded")
    parser.add_argument("--canary-percent", type=float, default=10.0)
    parser.add_argument(
        "--min-feedback", type=int, default=100, help="feedback on the canary before promotion"
    )
    parser.add_argument("--max-minutes", type=float, default=20.0, help="give up on the rollout after this")
    parser.add_argument("--out", type=Path, default=RESULTS / "loop.md")
    return parser.parse_args(argv)


async def upload(client: httpx.AsyncClient, pixels: np.ndarray, limit: asyncio.Semaphore) -> dict[str, Any]:
    """One user's upload; its own request id, so the canary's hash split sees one user per request."""
    async with limit:
        response = await client.post(
            "/predict",
            files={"file": ("digit.png", encode(pixels), "image/png")},
            headers={"X-Request-ID": uuid.uuid4().hex},
        )
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


async def correct(
    client: httpx.AsyncClient, prediction_id: str, label: int, limit: asyncio.Semaphore
) -> None:
    async with limit:
        response = await client.post("/feedback", json={"prediction_id": prediction_id, "label": label})
    response.raise_for_status()


async def answer(client: httpx.AsyncClient, images: np.ndarray) -> list[dict[str, Any]]:
    limit = asyncio.Semaphore(CONCURRENCY)
    return list(await asyncio.gather(*(upload(client, image, limit) for image in images)))


async def give_feedback(client: httpx.AsyncClient, answers: list[dict[str, Any]], labels: np.ndarray) -> None:
    limit = asyncio.Semaphore(CONCURRENCY)
    await asyncio.gather(
        *(
            correct(client, a["prediction_id"], int(label), limit)
            for a, label in zip(answers, labels, strict=True)
        )
    )


def served_accuracy(client: httpx.Client, images: np.ndarray, labels: np.ndarray) -> tuple[int, float]:
    """The default version's accuracy on `images`, asked of the service in one batch."""
    raw = io.BytesIO()
    np.save(raw, images)
    response = client.post(
        "/predict/batch", content=raw.getvalue(), headers={"Content-Type": "application/x-npy"}
    )
    response.raise_for_status()
    body = response.json()
    return int(body["model"]["version"]), float(np.mean(np.array(body["predictions"]) == labels))


def wait_for_default(client: httpx.Client, version: int, timeout: float = 60.0) -> None:
    """Until every worker answers with `version` by default: each worker reads the rollout's pin at
    its next look at the store, so a decision reaches them one poll apart."""
    deadline, streak = time.perf_counter() + timeout, 0
    while streak < SETTLED_STREAK:
        if time.perf_counter() > deadline:
            sys.exit(f"{PROG}: the service did not serve version {version} by default within {timeout:.0f} s")
        answered = client.get("/test/0").json()["model"]["version"]
        streak = streak + 1 if answered == version else 0


def mnist_accuracy(client: httpx.Client, version: int) -> float:
    response = client.get("/test/accuracy", params={"version": str(version)}, timeout=120)
    response.raise_for_status()
    return float(response.json()["accuracy"])


def rollout_of(client: httpx.Client, candidate: int) -> dict[str, Any] | None:
    response = client.get("/admin/rollouts")
    response.raise_for_status()
    return next((r for r in response.json()["rollouts"] if r["candidate"] == candidate), None)


def retrain(store: Path, data_dir: Path, database_url: str) -> dict[str, Any]:
    """`mnist-train --feedback` as a scheduled job runs it: corrections from the service's database,
    fine-tuning the version served now, gated against it."""
    started = time.perf_counter()
    command = [sys.executable, "-m", "training.train", "--preset", "cnn", "--store", str(store)]
    command += ["--data-dir", str(data_dir), "--no-download", "--verbose", "0"]
    command += ["--feedback", "--fine-tune-from", "serving"]
    result = subprocess.run(
        ["nice", *command],
        env=os.environ | {"MNIST_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        sys.exit(f"{PROG}: the retraining failed:\n{result.stderr[-3000:]}")
    return {
        "command": "mnist-train --preset cnn --feedback --fine-tune-from serving",
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


async def canary_traffic(
    url: str, candidate: int, live: np.ndarray, live_labels: np.ndarray, deadline: float
) -> tuple[dict[str, Any], dict[str, int]]:
    """Users go on uploading and correcting until the rollout of `candidate` ends; the answers each
    version gave meanwhile."""
    answered_by: dict[str, int] = {}
    rounds = itertools.cycle(range(0, len(live), ROUND))
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        with httpx.Client(base_url=url, timeout=60, headers=headers) as admin:
            while time.perf_counter() < deadline:
                start = next(rounds)
                images, labels = live[start : start + ROUND], live_labels[start : start + ROUND]
                answers = await answer(client, images)
                for a in answers:
                    version = str(a["model"]["version"])
                    answered_by[version] = answered_by.get(version, 0) + 1
                await give_feedback(client, answers, labels)
                rollout = await asyncio.to_thread(rollout_of, admin, candidate)
                if rollout is not None and rollout["state"] != "canary":
                    return rollout, answered_by
    sys.exit(f"{PROG}: the rollout of version {candidate} did not end in time")


def start_service(store: Path, args: argparse.Namespace, database_url: str, log_dir: Path) -> Server:
    env = service_env(
        store,
        args.data_dir,
        rollout="auto",
        rollout_canary_percent=str(args.canary_percent),
        rollout_min_feedback=str(args.min_feedback),
        database_url=database_url,
        admin_token=ADMIN_TOKEN,
        reload_poll_seconds="1",
    )
    return start_server("ours", args.workers, env, log_dir)


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    load_before = round(os.getloadavg()[0], 2)
    store_root = args.store or work / "store"
    if args.store is None:
        train(store_root, args.data_dir, ["--limit", "20000", "--epochs", "3"], {})
    store = ModelStore(store_root)
    database_url = args.database_url or f"sqlite:///{work / 'records.db'}"
    uploads, unseen = draw("corrected", args.uploads), draw("unseen", args.unseen)
    live = draw("live", 2000)
    test = load_split(args.data_dir, "test")
    # Canary traffic: typeset and MNIST digits taking turns, as a shifting population would send them.
    mixed = np.empty((2 * len(live.labels), 28, 28), np.uint8)
    mixed[0::2], mixed[1::2] = live.images, test.images[: len(live.labels)]
    mixed_labels = np.empty(2 * len(live.labels), np.int64)
    mixed_labels[0::2], mixed_labels[1::2] = live.labels, test.labels[: len(live.labels)]

    server = start_service(store_root, args, database_url, work)
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            before_version, unseen_before = served_accuracy(client, unseen.images, unseen.labels)
            mnist_before = mnist_accuracy(client, before_version)
            answers = asyncio.run(_answer_all(server.url, uploads.images))
            uploaded_accuracy = float(np.mean(np.array([a["prediction"] for a in answers]) == uploads.labels))
            timeline = Timeline(first_correction=time.perf_counter())
            asyncio.run(
                _feedback_all(server.url, answers[: args.corrections], uploads.labels[: args.corrections])
            )
            timeline.mark("corrections given")
            retraining = retrain(store_root, args.data_dir, database_url)
            timeline.mark("candidate published")
            candidate = max(store.versions())
            if candidate == before_version:
                sys.exit(f"{PROG}: the retraining published nothing")
            metadata = store.read_metadata(candidate)
            deadline = time.perf_counter() + 60 * args.max_minutes
            rollout, answered_by = asyncio.run(
                canary_traffic(server.url, candidate, mixed, mixed_labels, deadline)
            )
            timeline.mark(f"rollout ended: {rollout['state']}")
            wait_for_default(client, candidate if rollout["state"] == "promoted" else before_version)
            after_version, unseen_after = served_accuracy(client, unseen.images, unseen.labels)
            mnist_after = mnist_accuracy(client, after_version)
    finally:
        server.stop()
    gate = metadata.gate
    feedback = metadata.training.feedback
    return {
        "arguments": {k: str(v) for k, v in vars(args).items()},
        "cpu_count": os.cpu_count(),
        "before": {"version": before_version, "unseen": unseen_before, "mnist": mnist_before},
        "after": {"version": after_version, "unseen": unseen_after, "mnist": mnist_after},
        "uploaded_accuracy": uploaded_accuracy,
        "candidate": candidate,
        "feedback": None if feedback is None else feedback.model_dump(mode="json"),
        "gate": None if gate is None else gate.model_dump(mode="json"),
        "retraining": retraining,
        "rollout": rollout,
        "answered_during_canary": answered_by,
        "timeline": timeline.events,
        "load_average": [load_before, round(os.getloadavg()[0], 2)],
    }


async def _answer_all(url: str, images: np.ndarray) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        return await answer(client, images)


async def _feedback_all(url: str, answers: list[dict[str, Any]], labels: np.ndarray) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        await give_feedback(client, answers, labels)


def points(value: float) -> str:
    return f"{100 * value:.2f} %"


def render(result: dict[str, Any]) -> str:
    before, after, rollout = result["before"], result["after"], result["rollout"]
    evidence = rollout.get("evidence") or {}
    feedback = result["feedback"] or {}
    error_ratio = (1 - after["unseen"]) / max(1 - before["unseen"], 1e-9)
    lines = [
        "# The correction loop, live",
        "",
        "Written by `python -m bench.loop`. A running service with `MNIST_ROLLOUT=auto` answers "
        "uploaded typeset digits (`training.populations`), a style MNIST lacks; users correct part of "
        "the answers; `mnist-train --feedback --fine-tune-from serving` reads the corrections from the "
        "service's database and publishes a candidate that the gate proved; the service canaries it "
        "and decides by itself. Accuracies are asked of the live service.",
        "",
        "| served | version | unseen typeset digits | error | MNIST test |",
        "| --- | --- | --- | --- | --- |",
        f"| before | {before['version']} | {points(before['unseen'])} | {points(1 - before['unseen'])} "
        f"| {points(before['mnist'])} |",
        f"| after | {after['version']} | {points(after['unseen'])} | {points(1 - after['unseen'])} "
        f"| {points(after['mnist'])} |",
        "",
        f"Error on the unseen part: from {points(1 - before['unseen'])} to {points(1 - after['unseen'])} "
        f"({error_ratio:.2f}x); MNIST test "
        f"{100 * (after['mnist'] - before['mnist']):+.2f} points.",
        "",
        f"Corrections used: {feedback.get('examples', 0)} ({feedback.get('trained_on', 0)} trained on, "
        f"{feedback.get('held_out', 0)} held out) of {result['arguments']['uploads']} uploads, which "
        f"the current model answered {points(result['uploaded_accuracy'])} right.",
        "",
        f"The gate: {(result['gate'] or {}).get('reason', 'none')}.",
        "",
        f"The rollout of version {result['candidate']}: {rollout['state'].replace('_', ' ')}"
        + (f", {rollout['reason']}" if rollout.get("reason") else "")
        + ".",
    ]
    if evidence:
        shares = {side: (evidence.get(side) or {}).get("answers", 0) for side in ("candidate", "stable")}
        during = sum(shares.values())
        if during:
            lines += [
                "",
                f"While the canary ran, the candidate gave {shares['candidate']} of the {during} answers "
                f"({points(shares['candidate'] / during)}; its share: {rollout['percent']:.0f} % of "
                "clients). "
                "The evidence the service decided on:",
            ]
        lines += [
            "",
            "| evidence | answers | feedback | live accuracy | p99 |",
            "| --- | --- | --- | --- | --- |",
        ]
        for side in ("candidate", "stable"):
            numbers = evidence.get(side) or {}
            accuracy, p99 = numbers.get("accuracy"), numbers.get("p99_ms")
            shown_accuracy = "-" if accuracy is None else points(accuracy)
            shown_p99 = "-" if p99 is None else f"{p99:.1f} ms"
            lines.append(
                f"| {side} | {numbers.get('answers', '-')} | {numbers.get('feedback', '-')} "
                f"| {shown_accuracy} | {shown_p99} |"
            )
    lines += ["", "Seconds from the first correction:", ""]
    lines += [f"- {event}: {seconds:.0f} s" for event, seconds in result["timeline"].items()]
    lines += [
        "",
        f"The retraining took {result['retraining']['wall_seconds']:.0f} s "
        f"(`{result['retraining']['command']}`), on {result['cpu_count']} cores with the service running "
        f"(load average {result['load_average'][0]:.1f} before the run, "
        f"{result['load_average'][1]:.1f} after).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="loop-") as work:
        result = measure(args, Path(work))
    write_results(args.out, result, render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
