"""The default path builds the model the front page advertises (`bench.claims`): every default
training path runs `mnist-train` with the same arguments, and a version trained with them is
served at the claimed precision."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import httpx
import pytest
import yaml

from bench.claims import DEFAULT_PRESET, DEFAULT_SERVED_PRECISION
from tests.support.compose import load_compose, service_environment
from tests.support.live_server import service_env, uvicorn_server
from tests.support.paths import REPO_ROOT
from training.arguments import parse_args
from training.train import main as train

# The full run serve.sh starts in the background once the quick model serves.
SERVE_SH_FULL_RUN = re.compile(r"nohup nice -n \d+ mnist-train (.+?) >")


def default_paths() -> dict[str, list[str]]:
    """path -> the arguments it gives `mnist-train`."""
    serve_sh = (REPO_ROOT / "scripts" / "serve.sh").read_text()
    (full_run,) = SERVE_SH_FULL_RUN.findall(serve_sh)
    compose_train = load_compose({})["services"]["train"]
    (job,) = [d for d in yaml.safe_load_all((REPO_ROOT / "deploy/kubernetes/training/job.yaml").read_text())]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return {
        "scripts/serve.sh": shlex.split(full_run.replace('"$preset"', DEFAULT_PRESET)),
        "compose train": shlex.split(service_environment(compose_train)["DEPLOY_TRAIN_ARGS"] or ""),
        "kubernetes Job": container["command"][1:],
        "mnist-train": [],
    }


@pytest.mark.parametrize("path", sorted(default_paths()))
def test_every_default_path_trains_the_claimed_recipe(path: str, tmp_path: Path) -> None:
    args = parse_args([*default_paths()[path], "--store", str(tmp_path)])
    assert args.preset == DEFAULT_PRESET
    # Serving's `auto` runs int8 only after its proof, which needs the robustness benchmark.
    assert args.robustness == (DEFAULT_SERVED_PRECISION == "int8")
    assert not args.quick


@pytest.mark.slow
@pytest.mark.e2e
def test_the_default_training_is_served_at_the_claimed_precision(tmp_path: Path, mnist_dir: Path) -> None:
    """A short run through the defaults (fewer images and epochs, nothing else changed)."""
    store = tmp_path / "store"
    args = [*default_paths()["compose train"], "--limit", "2000", "--epochs", "1", "--no-savedmodel"]
    assert train([*args, "--store", str(store), "--data-dir", str(mnist_dir), "--no-download"]) == 0
    with uvicorn_server(service_env(store, mnist_dir), tmp_path / "server.log") as server:
        info = httpx.get(f"{server.url}/model", timeout=10).json()
    (served,) = [loaded for loaded in info["loaded"] if loaded["default"]]
    assert served["precision"] == DEFAULT_SERVED_PRECISION
    assert info["metadata"]["training"]["preset"] == DEFAULT_PRESET
