"""Run what the containers run, without Docker.

The Dockerfile's own build steps (its COPY and pip/venv RUN instructions, with the image's paths mapped
into a temporary root) build a fresh virtual environment from this repository, once per session. Then
the image's exact CMD, with the image's ENV, serves a copy of the `trained_store` fixture laid out like
the `models` volume; a real MNIST test digit goes to /predict, and the HEALTHCHECK's own command
probes the server. The compose `train` job's shell script is run against an empty and a full store.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bench.digits import encode
from model_store.mnist_data import load_split
from tests.support.compose import as_command, load_compose, service_environment
from tests.support.dockerfile import (
    Stage,
    build_arg_defaults,
    duration_seconds,
    exec_form,
    expand_vars,
    mount_options,
    parse_dockerfile,
    parse_healthcheck,
    split_run_flags,
)
from tests.support.dockerignore import materialize_context
from tests.support.live_server import free_port, spawn, stop, wait_ready
from tests.support.paths import REPO_ROOT

STARTUP_TIMEOUT_SECONDS = 150
# The python:3.11-slim image's own environment, under the Dockerfile's ENV.
BASE_IMAGE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
# Host settings a build or a server here needs (the package mirror; the machine's OpenBLAS setting).
PASSED_THROUGH = re.compile(r"(PIP_\w+|OPENBLAS_\w+|https?_proxy|HTTPS?_PROXY|no_proxy|NO_PROXY)")
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
TEST_EXTRA = PYPROJECT["project"]["optional-dependencies"]["test"]

pytestmark = pytest.mark.e2e  # builds a virtual environment like the image (~1 min) and runs its commands


def to_root(text: str, root: Path) -> str:
    """Put every absolute path in `text` (an image path like /opt/venv/bin) under `root`."""
    return re.sub(r"(^|[\s=:'\"])/(?=[\w.])", lambda m: f"{m.group(1)}{root}/", text)


def host_passthrough() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if PASSED_THROUGH.fullmatch(k)}


@dataclass
class BuiltImage:
    """What the emulated build produced: its root folder and the final stage."""

    root: Path
    final: Stage
    log: Path
    skipped: list[str]

    def environment(self, **overrides: str) -> dict[str, str]:
        """The container's environment: base image, then the Dockerfile's ENV, then `docker run -e`."""
        env = dict(BASE_IMAGE_ENV)
        for instruction in self.final.all("ENV"):
            for key, value in instruction.envs.items():
                env[key] = expand_vars(to_root(value, self.root), env)
        return env | host_passthrough() | {"HOME": str(self.root / "home" / "app")} | overrides

    def workdir(self) -> Path:
        instruction = self.final.last("WORKDIR")
        path = self.root / (instruction.value.lstrip("/") if instruction else "")
        path.mkdir(parents=True, exist_ok=True)
        return path


def emulate_build(root: Path, log: Path) -> BuiltImage:
    """Follow the Dockerfile: COPY from the build context, RUN the pip and venv steps, under `root`.

    All stages share `root`, which stands for the paths a `--mount=type=bind,from=STAGE` shows: the
    emulation checks that each such mount has the same source and target. RUN steps that only set up
    the image's user and folders (groupadd, useradd, mkdir, chown) are skipped and listed.
    """
    context = root.parent / "context"
    materialize_context(context)
    stages = parse_dockerfile()
    skipped: list[str] = []
    path = f"{Path(sys.executable).parent}:{BASE_IMAGE_ENV['PATH']}"  # this python stands for the image's
    with log.open("w") as out:
        for stage in stages:
            # Build arguments at their defaults, as `docker build` without --build-arg.
            env = dict(BASE_IMAGE_ENV, PATH=path) | host_passthrough() | build_arg_defaults([stage])
            workdir = root
            for instruction in stage.instructions:
                if instruction.name == "WORKDIR":
                    workdir = root / instruction.value.lstrip("/")
                    workdir.mkdir(parents=True, exist_ok=True)
                elif instruction.name == "ENV":
                    for key, value in instruction.envs.items():
                        env[key] = expand_vars(to_root(value, root), env)
                elif instruction.name == "COPY":
                    copy(instruction.value, context, workdir)
                elif instruction.name == "RUN":
                    flags, command = split_run_flags(instruction.value)
                    for flag in flags:
                        options = mount_options(flag)
                        if options.get("type") == "bind":
                            assert options.get("source") == options.get("target"), flag
                    if not re.search(r"\b(pip|venv)\b", command):
                        skipped.append(command)
                        continue
                    out.write(f"\n$ {command}\n")
                    out.flush()
                    result = subprocess.run(
                        ["sh", "-c", to_root(command, root)],
                        cwd=workdir,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        check=False,
                    )
                    assert result.returncode == 0, f"Dockerfile line {instruction.line} failed; see {log}"
    return BuiltImage(root, stages[-1], log, skipped)


def copy(value: str, context: Path, workdir: Path) -> None:
    words = value.split()
    assert not any(w.startswith("--from") for w in words), "COPY --from is not emulated"
    *sources, destination = [w for w in words if not w.startswith("--")]
    target = workdir / destination
    for source in sources:
        origin = context / source
        if origin.is_dir():
            shutil.copytree(origin, target, dirs_exist_ok=True)
        else:
            target.mkdir(parents=True, exist_ok=True) if destination.endswith("/") else None
            shutil.copy2(origin, target / origin.name if target.is_dir() else target)


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    base = tmp_path_factory.mktemp("image")
    started = time.monotonic()
    built = emulate_build(base / "rootfs", base / "build.log")
    (built.root / "home" / "app").mkdir(parents=True, exist_ok=True)
    print(f"\nemulated image build: {time.monotonic() - started:.0f} s")
    return built


def run_python(image: BuiltImage, code: str) -> str:
    """Run code with the image's python, from its WORKDIR (not from here: a stale
    mnist_serve.egg-info in the repository would shadow the installed distribution)."""
    python = image.root / "opt" / "venv" / "bin" / "python"
    return subprocess.run(
        [str(python), "-c", code], cwd=image.workdir(), capture_output=True, text=True, check=True
    ).stdout


def installed_distributions(image: BuiltImage) -> set[str]:
    code = "import importlib.metadata as m; print('\\n'.join(d.metadata['Name'] for d in m.distributions()))"
    return {normalize(name) for name in run_python(image, code).split()}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# Inside the image's python: every distribution that mnist-serve needs, following extras and markers.
REQUIREMENT_CLOSURE = """
import importlib.metadata as m, re
from packaging.requirements import Requirement
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
seen, todo = set(), [("mnist-serve", frozenset(EXTRAS))]
while todo:
    name, extras = todo.pop()
    if (norm(name), extras) in seen:
        continue
    seen.add((norm(name), extras))
    try:
        requires = m.distribution(name).requires or []
    except m.PackageNotFoundError:
        continue
    for text in requires:
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (extras or {""})):
            todo.append((req.name, frozenset(req.extras)))
print("\\n".join(sorted({n for n, _ in seen})))
"""


def test_build_steps_make_a_runtime_only_environment(image: BuiltImage) -> None:
    assert all(re.search(r"\b(groupadd|useradd|mkdir|chown)\b", step) for step in image.skipped), (
        image.skipped
    )
    installed = installed_distributions(image)
    # The project with the extras the Dockerfile's EXTRAS argument names by default (`train`).
    extras = build_arg_defaults(parse_dockerfile()[:-1])["EXTRAS"]
    closure = REQUIREMENT_CLOSURE.replace("EXTRAS", repr([e for e in extras.split(",") if e]))
    needed = set(run_python(image, closure).split())
    assert "mnist-serve" in installed
    assert needed <= installed, f"missing from the image: {needed - installed}"
    assert installed <= needed, f"in the image but not needed at run time: {installed - needed}"
    tooling = {normalize(re.split(r"[\[<>=;! ]", spec, maxsplit=1)[0]) for spec in TEST_EXTRA}
    assert not (installed & tooling) - needed, "test tooling in the image"
    assert "pip" not in installed


def test_install_step_leaves_out_test_suites_and_headers(image: BuiltImage) -> None:
    """The wheels' own test suites and what compiling against them takes are deleted as they are
    installed; the licences in *.dist-info stay."""
    site = image.root / "opt" / "venv" / "lib" / "python3.11" / "site-packages"
    left = [
        path.relative_to(site)
        for path in site.rglob("*")
        if not any(part.endswith(".dist-info") for part in path.relative_to(site).parts)
        and (
            (path.is_dir() and path.name in ("tests", "include"))
            or path.suffix in (".h", ".hpp", ".a", ".pyx", ".pxd")
        )
    ]
    assert left == [], left[:20]
    assert not (site / "onnx" / "backend" / "test").exists()
    assert any(site.glob("numpy-*.dist-info/licenses/**/*")), "the licences stay"


@pytest.fixture
def volume(image: BuiltImage, trained_store: Path, mnist_dir: Path) -> Iterator[Path]:
    """The `models` volume at the image's MNIST_MODEL_STORE, holding a copy of the trained store."""
    store = Path(image.environment()["MNIST_MODEL_STORE"])
    data = Path(image.environment()["MNIST_DATA_DIR"])
    shutil.rmtree(store, ignore_errors=True)
    shutil.copytree(trained_store, store)
    data.parent.mkdir(parents=True, exist_ok=True)
    if not data.exists():
        data.symlink_to(mnist_dir)  # the read-only ./data/mnist bind mount
    yield store
    shutil.rmtree(store, ignore_errors=True)


def test_container_command_serves_predictions(
    image: BuiltImage, volume: Path, mnist_dir: Path, tmp_path: Path
) -> None:
    cmd = image.final.last("CMD")
    assert cmd is not None and image.final.last("ENTRYPOINT") is None
    command = exec_form(cmd.value)
    port = free_port()
    # As `docker run -e MNIST_PORT=... -e MNIST_HOST=127.0.0.1` would: a free port, loopback only here.
    env = image.environment(MNIST_PORT=str(port), MNIST_HOST="127.0.0.1")
    health = parse_healthcheck(image.final.last("HEALTHCHECK").value)  # type: ignore[union-attr]
    log_path = tmp_path / "server.log"
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    server = spawn(command, port, log_path, env=env, cwd=image.workdir(), new_session=True)
    process = server.process
    try:
        wait_ready(server, STARTUP_TIMEOUT_SECONDS, route="/healthz")
        print(f"\nserver live after {time.monotonic() - started:.0f} s")
        # The command is the server itself (exec form, no shell in between): it gets SIGTERM directly.
        assert "mnist-serve" in Path(f"/proc/{process.pid}/cmdline").read_bytes().decode(errors="replace")

        test = load_split(mnist_dir, "test")
        for index in range(5):
            label = int(test.labels[index])
            files = {"file": (f"digit-{index}.png", encode(test.images[index]), "image/png")}
            response = httpx.post(f"{url}/predict", files=files, timeout=30)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["prediction"] == label, f"test digit {index}: {body} (label {label})"
            assert body["model"] == {"name": "mnist", "version": 1}
        assert httpx.get(f"{url}/readyz", timeout=10).json()["status"] == "ready"

        # The HEALTHCHECK's own command, with the container's environment, reports healthy.
        probe = subprocess.run(
            health.command, env=env, capture_output=True, timeout=duration_seconds(health.options["timeout"])
        )
        assert probe.returncode == 0, probe.stderr
    finally:
        stop(process, 40)
    # uvicorn drains, shuts the app down, then re-raises SIGTERM: exit status 143 in a container.
    log_text = log_path.read_text()
    assert process.returncode in (0, -signal.SIGTERM), f"SIGTERM did not stop it cleanly:\n{log_text[-3000:]}"
    assert "Application shutdown complete" in log_text
    # ... and reports unhealthy once nothing answers.
    probe = subprocess.run(health.command, env=env, capture_output=True, timeout=30)
    assert probe.returncode != 0


# --- the compose `train` job -------------------------------------------------------------------------


def run_train_job(
    image: BuiltImage, store: Path, tmp_path: Path, **extra_env: str
) -> tuple[int, str, list[str]]:
    """The `train` service's command with its compose environment; a stub mnist-train records its args."""
    service = load_compose()["services"]["train"]
    stub_dir = tmp_path / "stub"
    stub_dir.mkdir(exist_ok=True)
    calls = tmp_path / "calls"
    stub = stub_dir / "mnist-train"
    stub.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {calls}\n')
    stub.chmod(0o755)
    env = image.environment()
    for key, value in service_environment(service).items():
        if value is not None:
            env[key] = to_root(value, image.root) if value.startswith("/") else value
    env |= {"MNIST_MODEL_STORE": str(store), "PATH": f"{stub_dir}:{env['PATH']}"} | extra_env
    calls.unlink(missing_ok=True)
    result = subprocess.run(
        as_command(service["command"]), env=env, capture_output=True, text=True, timeout=120
    )
    args = calls.read_text().split("\n")[:-1] if calls.exists() else []
    return result.returncode, result.stdout + result.stderr, args


def test_train_job_trains_into_an_empty_store(image: BuiltImage, tmp_path: Path) -> None:
    code, output, args = run_train_job(image, tmp_path / "empty-volume", tmp_path)
    assert code == 0, output
    assert args == ["--preset", "cnn", "--verbose", "2"], output


def test_train_job_skips_a_store_that_has_a_model(
    image: BuiltImage, trained_store: Path, tmp_path: Path
) -> None:
    code, output, args = run_train_job(image, trained_store, tmp_path)
    assert (code, args) == (0, []), output
    assert "already holds version(s) 1" in output
    code, output, args = run_train_job(image, trained_store, tmp_path, DEPLOY_RETRAIN="1")
    assert code == 0 and args[:2] == ["--preset", "cnn"], output
