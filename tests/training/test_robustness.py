"""`python -m training.robustness`: scores a published version and records the result beside it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from model_store.metadata import (
    METADATA_FILE,
    ROBUSTNESS_CHART_FILE,
    ROBUSTNESS_TABLE_FILE,
    ModelMetadata,
)
from model_store.store import ModelStore
from tests.conftest import make_metadata
from training.corruptions import MNIST_C
from training.robustness import main

pytestmark = pytest.mark.slow  # scores the session's trained cnn on MNIST-C

LIMIT = 150


@pytest.fixture(scope="module")
def scored_store(trained_store: Path, mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's store whose version 1 has been through the benchmark."""
    store = Path(shutil.copytree(trained_store, tmp_path_factory.mktemp("scored") / "store"))
    args = ["--store", str(store), "--version", "1", "--limit", str(LIMIT), "--data-dir", str(mnist_dir)]
    assert main(args) == 0
    return store


def test_benchmark_writes_table_chart_and_metadata(scored_store: Path) -> None:
    folder = ModelStore(scored_store).version_path(1)
    metadata = ModelStore(scored_store).read_metadata(1)
    robustness = metadata.robustness
    assert robustness is not None and robustness.images == LIMIT and robustness.seed == 0
    assert list(robustness.families) == [*MNIST_C, "upload"]
    mnist_c = [robustness.families[name] for name in MNIST_C]
    assert robustness.mnist_c_mean == pytest.approx(sum(mnist_c) / 15, abs=1e-5)
    assert robustness.families[robustness.worst_family] == min(mnist_c)
    # The session model is good on clean digits and measurably worse on the worst corruption.
    assert robustness.clean > 0.9 and min(mnist_c) < robustness.clean - 0.1
    assert metadata.files["robustness"] == ROBUSTNESS_CHART_FILE
    assert (folder / ROBUSTNESS_CHART_FILE).read_bytes().startswith(b"\x89PNG")
    table = (folder / ROBUSTNESS_TABLE_FILE).read_text()
    assert "| clean |" in table and "| canny_edges |" in table and "| upload |" in table
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".tmp-")]


def test_benchmark_is_reproducible_for_a_seed(scored_store: Path, mnist_dir: Path) -> None:
    store = ModelStore(scored_store)
    before = store.read_metadata(1).robustness
    assert before is not None
    args = ["--store", str(scored_store), "--limit", str(LIMIT), "--data-dir", str(mnist_dir)]
    assert main(args) == 0
    after = store.read_metadata(1).robustness
    assert after is not None and after.families == before.families and after.clean == before.clean


def test_model_endpoint_shows_robustness_and_its_chart(scored_store: Path, mnist_dir: Path) -> None:
    with TestClient(create_app(Settings(model_store=scored_store, data_dir=mnist_dir))) as client:
        body = client.get("/model").json()
        assert body["metadata"]["robustness"]["images"] == LIMIT
        assert "upload" in body["metadata"]["robustness"]["families"]
        chart = client.get(body["plots"]["robustness"])
        assert chart.status_code == 200 and chart.content.startswith(b"\x89PNG")


def test_metadata_without_robustness_still_loads(tmp_path: Path) -> None:
    old = make_metadata("mnist", 1).model_dump(mode="json")
    del old["robustness"]
    path = tmp_path / METADATA_FILE
    path.write_text(json.dumps(old))
    assert ModelMetadata.model_validate_json(path.read_bytes()).robustness is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--version", "7"], "version 7 of model 'mnist' not found"),
        (["--version", "../1"], "version must be a positive integer"),
        (["--limit", "0"], "--limit: 0 is not a whole number of at least 1"),
    ],
)
def test_user_errors_are_one_line(
    args: list[str], message: str, trained_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--store", str(trained_store), *args])
    assert exit_info.value.code != 0
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in error and "Traceback" not in error


def test_compare_prints_one_table_of_recorded_results(
    scored_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--store", str(scored_store), "--compare", "1,1"]) == 0
    table = capsys.readouterr().out
    assert table.startswith("| family | v1 cnn, 2 epochs | v1 cnn, 2 epochs |")
    assert len(table.strip().splitlines()) == 2 + 1 + 15 + 1 + 1  # header, clean, families, mean, upload


def test_compare_refuses_a_version_without_results(
    trained_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["--store", str(trained_store), "--compare", "1"])
    assert "version 1 has no robustness results" in capsys.readouterr().err


def test_uploads_only_scores_uploads_and_writes_nothing(
    trained_store: Path, mnist_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sorted(p.name for p in ModelStore(trained_store).version_path(1).iterdir())
    args = ["--store", str(trained_store), "--uploads-only", "--limit", "60"]
    assert main([*args, "--data-dir", str(mnist_dir)]) == 0
    # Without --background, the method the service runs.
    assert capsys.readouterr().out.startswith("v1 background=flat upload=")
    assert sorted(p.name for p in ModelStore(trained_store).version_path(1).iterdir()) == before
