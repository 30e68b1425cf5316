"""The measured numbers of the README and the docs are generated from `bench/results/` by
`scripts/result_pages.py`: a page that drifts from its source fails here, and the numbers a page
states twice agree."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import result_pages

RESULT_FILES = ("latest.json", "models.json", "image.md", "prediction-log.md")


@pytest.fixture
def results_without_training(tmp_path: Path) -> result_pages.Results:
    for name in RESULT_FILES:
        shutil.copy(result_pages.RESULTS / name, tmp_path / name)
    return result_pages.Results(tmp_path)


def test_every_generated_region_matches_its_source() -> None:
    assert result_pages.main(["--check"]) == 0, "run python scripts/result_pages.py"


def test_a_region_that_drifted_is_rewritten_and_check_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = tmp_path / "README.md"
    page.write_text("On `cnn`: <!-- generated: memory -->1 MiB<!-- end generated -->.\n")
    monkeypatch.setattr(result_pages, "PAGES", [page])

    assert result_pages.main(["--check"]) == 1
    assert result_pages.main([]) == 0
    low, high = result_pages.worker_memory(result_pages.Results())
    expected = f"<!-- generated: memory -->{low:.0f}-{high:.0f} MiB<!-- end generated -->"
    assert page.read_text() == f"On `cnn`: {expected}.\n"
    assert result_pages.main(["--check"]) == 0


def test_an_unknown_region_is_refused() -> None:
    with pytest.raises(KeyError, match="no-such-table"):
        result_pages.rewrite(
            "<!-- generated: no-such-table --><!-- end generated -->", result_pages.Results()
        )


def test_every_region_the_pages_name_has_a_renderer_and_every_renderer_is_used() -> None:
    named = {name for page in result_pages.PAGES for name in result_pages.regions(page.read_text())}
    assert named == set(result_pages.RENDERERS)


def test_the_readme_headline_agrees_with_its_table() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    headline = re.search(r"generated: headline -->(.*?)<!--", readme, re.DOTALL)
    assert headline is not None
    ratios = re.findall(r"(\d+\.\d)x (?:BentoML's throughput|on the default CNN)", headline.group(1))
    seed_ratio, cnn_ratio = (float(ratio) for ratio in ratios)
    rows = (line.strip("| ").split(" | ") for line in readme.splitlines())
    table = {row[0]: row for row in rows if row[0].startswith("`")}
    # The headline rounds the measured ratio to one decimal, the table to two.
    assert abs(seed_ratio - float(table["`seed` (float32)"][1].rstrip("x"))) <= 0.05
    served = result_pages.CNN_SERVED_PRECISION
    assert abs(cnn_ratio - float(table[f"`cnn` ({served})"][1].rstrip("x"))) <= 0.05
    assert f"served in {served}" in headline.group(1)


def test_the_precision_cnn_serves_is_stated_the_same_everywhere() -> None:
    served = result_pages.CNN_SERVED_PRECISION
    other = "float32" if served == "int8" else "int8"
    for page in result_pages.PAGES:
        text = page.read_text()
        assert f"`cnn` ({other})" not in text, page
        assert f"`cnn`: {other}" not in text, page


def test_without_training_timings_the_published_fit_time_is_shown(
    results_without_training: result_pages.Results,
) -> None:
    assert results_without_training.training is None
    assert "not measured yet" in result_pages.training_steps(results_without_training)
    seconds = results_without_training.models["cnn"]["train_seconds"]
    assert result_pages.training_time(results_without_training, "cnn") == f"{seconds:.0f} s"


def test_training_timings_give_each_kind_of_cpu_its_fit(
    results_without_training: result_pages.Results,
) -> None:
    recipe = {"epochs": 18, "steps_per_epoch": 430, "batch_size": 128}
    timings = {
        "presets": {
            "cnn": {
                "bfloat16": recipe | {"cpu_seconds_per_step": 0.09, "estimated_fit_cpu_seconds": 696.6},
                "float32": recipe | {"cpu_seconds_per_step": 0.22, "estimated_fit_cpu_seconds": 1702.8},
                "load_average": {"before": [1.0, 1.0, 1.0], "after": [1.0, 1.0, 1.0]},
            }
        }
    }
    (results_without_training.folder / "training.json").write_text(json.dumps(timings))

    table = result_pages.training_steps(results_without_training)

    assert "The `cnn`'s 7,740 steps (18 epochs of 430), batch 128:" in table
    assert "(what `auto` picks there) | 0.090 | 12 min |" in table
    assert "(what `auto` picks on an AVX2-only CPU) | 0.220 | 28 min |" in table
    assert "load" not in table
    kinds = result_pages.training_kinds(results_without_training)
    assert "12 min of CPU where it has bfloat16 instructions, 28 min in float32" in kinds
    # The model cards keep the published version's measured fit.
    seconds = results_without_training.models["cnn"]["train_seconds"]
    assert result_pages.training_time(results_without_training, "cnn") == f"{seconds:.0f} s"


def test_the_serving_image_size_is_read_from_the_image_report(
    results_without_training: result_pages.Results,
) -> None:
    report = results_without_training.folder / "image.md"
    report.write_text(report.read_text().replace("| 669.7 |", "| 512.3 |"))
    assert result_pages.serving_image(results_without_training) == "0.51 GB"


@pytest.mark.slow
def test_the_models_summary_is_the_stores_metadata(seed_store: Path) -> None:
    from model_store.store import ModelStore

    store = ModelStore(seed_store)
    newest = store.read_metadata(store.versions()[-1])

    summary = result_pages.summarise_store(seed_store)["presets"][newest.training.preset]

    assert summary["accuracy"] == newest.evaluation.accuracy
    assert summary["correct"] == newest.evaluation.correct
    assert summary["train_seconds"] == round(newest.training.train_seconds, 1)


def test_the_other_precisions_accuracy_is_read_from_the_models_summary(
    results_without_training: result_pages.Results,
) -> None:
    summary_file = results_without_training.folder / "models.json"
    summary = json.loads(summary_file.read_text())
    summary.pop("precision_runs", None)
    summary_file.write_text(json.dumps(summary))
    assert result_pages.cnn_other_precision(result_pages.Results(results_without_training.folder)) == (
        "not measured yet"
    )
    run = {"preset": "cnn", "precision": "float32", "seed": 42, "accuracy": 0.9958, "correct": 9958}
    summary_file.write_text(json.dumps(summary | {"precision_runs": [run]}))
    text = result_pages.cnn_other_precision(result_pages.Results(results_without_training.folder))
    assert text.startswith("99.58 % (9,958 / 10,000) trained in float32, at seed 42")
