"""A broken model store stops the service at startup: a message naming the path and the problem, a
non-zero exit, and never a ready (or half-working) service in between.

Every fault gets its own real process (`python -m uvicorn app.main:create_app --factory`, and the
`mnist-serve` CLI once); they start together, and /readyz is polled until each one exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from model_store.metadata import METADATA_FILE, MODEL_FILE
from tests.support.live_server import free_port, spawn

pytestmark = pytest.mark.e2e

EXIT_DEADLINE_SECONDS = 60
# Services starting at once: each imports TensorFlow, and the machine may have only two cores.
PARALLEL = 2


@dataclass
class Fault:
    """Break a copy of the store; `expect` lists what the output must say ({store}, {version} filled in)."""

    damage: Callable[[Path], None]
    expect: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cli: bool = False
    workers: int = 1


def version_dir(store: Path) -> Path:
    return store / "mnist" / "1"


def empty(store: Path) -> None:
    shutil.rmtree(store / "mnist")


def remove(name: str) -> Callable[[Path], None]:
    return lambda store: (version_dir(store) / name).unlink()


def corrupt_model(store: Path) -> None:
    (version_dir(store) / MODEL_FILE).write_bytes(b"PK\x03\x04 a zip archive cut short")


def metadata_input_shape(shape: list[int]) -> Callable[[Path], None]:
    def damage(store: Path) -> None:
        path = version_dir(store) / METADATA_FILE
        metadata = json.loads(path.read_text())
        metadata["input"]["shape"] = shape
        path.write_text(json.dumps(metadata))

    return damage


FAULTS: dict[str, Fault] = {
    "empty store": Fault(empty, ["no published version", "{store}/mnist"]),
    "missing model.keras": Fault(remove(MODEL_FILE), ["model file is missing", "{version}/model.keras"]),
    "corrupt model.keras": Fault(corrupt_model, ["cannot load model", "{version}/model.keras"]),
    "metadata input shape disagrees with the model": Fault(
        metadata_input_shape([28, 28, 3]), ["disagrees with metadata", "(28, 28, 1)", "{version}/model.keras"]
    ),
    "pinned version not in the store": Fault(
        lambda store: None, ["version 9", "not found", "{store}/mnist"], env={"MNIST_MODEL_VERSION": "9"}
    ),
    "mnist-serve CLI, empty store": Fault(empty, ["no published version", "{store}/mnist"], cli=True),
    "two workers, corrupt model.keras": Fault(corrupt_model, ["cannot load model"], workers=2),
}


@dataclass
class Outcome:
    returncode: int | None  # None: still running at the deadline (then killed)
    seconds: float
    output: str
    readiness_polls: int
    ready_seen: bool


def command(fault: Fault, port: int) -> list[str]:
    if fault.cli or fault.workers > 1:
        # Several workers are run the way the container runs them: uvicorn's own supervisor
        # exits 0 when its workers fail to start, mnist-serve exits 3.
        cli = [str(Path(sys.executable).with_name("mnist-serve")), "--port", str(port)]
        return [*cli, "--workers", str(fault.workers)]
    base = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--host", "127.0.0.1"]
    return [*base, "--port", str(port), "--workers", str(fault.workers)]


@dataclass
class Started:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    store: Path
    at: float = field(default_factory=time.monotonic)
    polls: int = 0
    ready: bool = False

    def outcome(self, returncode: int | None) -> Outcome:
        output = self.log.read_text(errors="replace")
        return Outcome(returncode, time.monotonic() - self.at, output, self.polls, self.ready)


def start(fault: Fault, trained_store: Path, mnist_dir: Path, folder: Path) -> Started:
    store = Path(shutil.copytree(trained_store, folder / "store"))
    fault.damage(store)
    port = free_port()
    env = os.environ | {
        "MNIST_MODEL_STORE": str(store),
        "MNIST_DATA_DIR": str(mnist_dir),
        "MNIST_PORT": str(port),
        "MNIST_RELOAD_POLL_SECONDS": "0",
        "MNIST_LOG_JSON": "false",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        **fault.env,
    }
    log = folder / "service.log"
    return Started(spawn(command(fault, port), port, log, env=env).process, port, log, store)


@pytest.fixture(scope="module")
def outcomes(
    trained_store: Path, mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Outcome, Path]]:
    """Start the faulty services, PARALLEL at a time; poll each one's /readyz until it exits."""
    root = tmp_path_factory.mktemp("faults")
    waiting = list(FAULTS)
    running: dict[str, Started] = {}
    results: dict[str, tuple[Outcome, Path]] = {}
    with httpx.Client(timeout=0.5) as http:
        while waiting or running:
            while waiting and len(running) < PARALLEL:
                name = waiting.pop(0)
                folder = root / f"case{len(results) + len(running)}"
                folder.mkdir()
                running[name] = start(FAULTS[name], trained_store, mnist_dir, folder)
            for name, service in list(running.items()):
                returncode = service.process.poll()
                if returncode is None and time.monotonic() - service.at > EXIT_DEADLINE_SECONDS:
                    service.process.kill()
                    service.process.wait()
                elif returncode is None:
                    service.polls += 1
                    with contextlib.suppress(httpx.HTTPError):
                        service.ready |= (
                            http.get(f"http://127.0.0.1:{service.port}/readyz").status_code == 200
                        )
                    continue
                results[name] = (service.outcome(returncode), service.store)
                del running[name]
            time.sleep(0.2)
    return results


def expected_words(fault: Fault, store: Path) -> list[str]:
    return [word.format(store=store, version=version_dir(store)) for word in fault.expect]


@pytest.mark.parametrize("name", list(FAULTS))
def test_fault_exits_non_zero_naming_path_and_problem(
    outcomes: dict[str, tuple[Outcome, Path]], name: str
) -> None:
    outcome, store = outcomes[name]
    tail = outcome.output[-4000:]
    assert outcome.returncode is not None, f"still running after {EXIT_DEADLINE_SECONDS} s:\n{tail}"
    for words in expected_words(FAULTS[name], store):
        assert words in outcome.output, f"{words!r} not in the output:\n{tail}"
    assert outcome.returncode != 0, f"exit code 0 after a failed startup:\n{tail}"


@pytest.mark.parametrize("name", list(FAULTS))
def test_fault_never_becomes_ready(outcomes: dict[str, tuple[Outcome, Path]], name: str) -> None:
    outcome, _ = outcomes[name]
    assert outcome.returncode is not None, f"still running after {EXIT_DEADLINE_SECONDS} s"
    assert outcome.readiness_polls > 0, "the process exited before /readyz could be asked"
    assert not outcome.ready_seen, outcome.output[-4000:]
    assert outcome.seconds < EXIT_DEADLINE_SECONDS
