"""The int8 export written at publish time, and the rule that decides whether it is the default."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from model_store.forward import INT8_ONNX_FILE, ONNX_FILE, file_sha256
from model_store.metadata import PrecisionScores
from model_store.mnist_data import load_split
from model_store.preprocessing import to_model_input
from model_store.store import ModelStore
from model_store.trust import TRUST_STATISTICS_FILE
from model_store.verdict_rule import ClassStatistics, judge
from tests.conftest import assert_one_line_error, run_cli
from training.onnx_export import onnx_forward
from training.quantize import (
    ACCURACY_LIMIT,
    CALIBRATION_SAMPLES,
    MNIST_C_LIMIT,
    NEGATIVES_LIMIT,
    UPLOADS_LIMIT,
    VERDICT_AGREEMENT,
    decide,
    export_int8,
)
from training.splits import held_out_split

pytestmark = pytest.mark.slow  # trains, quantizes and scores the session's stores

FLOAT32 = PrecisionScores(accuracy=0.98, negatives_flagged=0.70, mnist_c_mean=0.90, uploads=0.95)


def int8_scores(**changes: float) -> PrecisionScores:
    return FLOAT32.model_copy(update=changes)


def test_equal_numbers_make_int8_the_default() -> None:
    default, reason = decide(FLOAT32, int8_scores(), 1.0)
    assert default, reason
    assert reason.startswith("the default:")


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"accuracy": FLOAT32.accuracy - ACCURACY_LIMIT}, None),
        ({"accuracy": FLOAT32.accuracy - ACCURACY_LIMIT - 0.0001}, "clean test accuracy 97.94 %"),
        ({"accuracy": FLOAT32.accuracy + ACCURACY_LIMIT + 0.0001}, "clean test accuracy"),
        ({"negatives_flagged": FLOAT32.negatives_flagged - NEGATIVES_LIMIT}, None),
        ({"negatives_flagged": FLOAT32.negatives_flagged - NEGATIVES_LIMIT - 0.001}, "negatives flagged"),
        ({"mnist_c_mean": 0.90 - MNIST_C_LIMIT}, None),
        ({"mnist_c_mean": 0.90 - MNIST_C_LIMIT - 0.0001}, "MNIST-C accuracy"),
        ({"uploads": 0.95 - UPLOADS_LIMIT}, None),
        ({"uploads": 0.95 - UPLOADS_LIMIT - 0.0001}, "uploads accuracy"),
    ],
)
def test_each_limit_is_held_at_its_edge_and_broken_past_it(
    changes: dict[str, float], words: str | None
) -> None:
    default, reason = decide(FLOAT32, int8_scores(**changes), 1.0)
    if words is None:
        assert default, reason
    else:
        assert not default
        assert reason.startswith("not the default: ") and words in reason, reason


def test_verdict_agreement_is_held_at_its_edge_and_broken_below_it() -> None:
    assert decide(FLOAT32, int8_scores(), VERDICT_AGREEMENT)[0]
    default, reason = decide(FLOAT32, int8_scores(), VERDICT_AGREEMENT - 0.0001)
    assert not default
    assert "verdicts agree on 99.89 % of test digits (at least 99.90 %)" in reason


def test_the_first_failed_rule_is_named() -> None:
    _, reason = decide(FLOAT32, int8_scores(accuracy=0.97, uploads=0.5), 0.5)
    assert reason.startswith("not the default: clean test accuracy 97.00 % against float32's 98.00 %")


def test_without_robustness_it_is_not_proven_and_says_what_is_missing() -> None:
    unmeasured = FLOAT32.model_copy(update={"mnist_c_mean": None, "uploads": None})
    assert decide(unmeasured, unmeasured, 1.0) == (
        False,
        "not proven: MNIST-C and uploads not measured (train with --robustness)",
    )
    default, reason = decide(unmeasured, unmeasured.model_copy(update={"accuracy": 0.9}), 1.0)
    assert not default and "not measured" in reason and "clean test accuracy 90.00 %" in reason


def test_publishing_writes_an_int8_export_with_its_measured_proof(
    trained_store: Path, mnist_dir: Path
) -> None:
    loaded = ModelStore(trained_store).open()
    export = loaded.metadata.int8
    assert export is not None
    path = loaded.path / INT8_ONNX_FILE
    assert loaded.metadata.files["int8"] == export.file == INT8_ONNX_FILE
    assert export.sha256 == file_sha256(path) and export.size_bytes == path.stat().st_size
    assert export.onnx_sha256 == file_sha256(loaded.path / ONNX_FILE)
    assert export.calibration_samples == CALIBRATION_SAMPLES
    # The float32 export scores what Keras scored at training; int8 stays close to it.
    assert export.float32.accuracy == pytest.approx(loaded.metadata.evaluation.accuracy, abs=2e-4)
    assert abs(export.int8.accuracy - export.float32.accuracy) < 0.01
    assert 0 < export.int8.negatives_flagged <= 1

    # The recorded agreement is what the two sessions give on the real test set.
    test = load_split(mnist_dir, "test")
    assert loaded.metadata.trust is not None
    rule, x = loaded.metadata.trust.rule(), to_model_input(test.images)
    statistics = ClassStatistics.load(loaded.path / TRUST_STATISTICS_FILE)
    verdicts = []
    for file in (ONNX_FILE, INT8_ONNX_FILE):
        _, logits, features = onnx_forward((loaded.path / file).read_bytes())(x)
        verdicts.append(judge(test.images, logits, features, rule, statistics).codes)
    agreement = float(np.mean(verdicts[0] == verdicts[1]))
    assert agreement == pytest.approx(export.verdict_agreement, abs=1e-4)
    assert 0.99 < agreement <= 1


def test_without_robustness_float32_stays_the_default(trained_store: Path) -> None:
    export = ModelStore(trained_store).open().metadata.int8
    assert export is not None
    assert export.float32.mnist_c_mean is None and export.int8.uploads is None
    assert not export.default
    assert export.reason.startswith("not proven: MNIST-C and uploads not measured (train with --robustness)")


def test_a_published_version_is_quantized_again_in_place(
    trained_store: Path, mnist_dir: Path, tmp_path: Path
) -> None:
    """A version published without the export (an older one) gets it, with the same proof."""
    store = ModelStore(Path(shutil.copytree(trained_store, tmp_path / "store")))
    published = store.open()
    assert published.metadata.int8 is not None
    (published.path / INT8_ONNX_FILE).unlink()
    files = {role: file for role, file in published.metadata.files.items() if role != "int8"}
    store.update_metadata(published.metadata.model_copy(update={"int8": None, "files": files}))

    result = run_cli(
        "training.quantize", "--store", str(store.root), "--data-dir", str(mnist_dir), cwd=tmp_path
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == f"version {published.version}: {published.metadata.int8.reason}\n"
    again = store.open().metadata
    assert again.int8 is not None and again.files["int8"] == INT8_ONNX_FILE
    assert again.int8.sha256 == file_sha256(published.path / INT8_ONNX_FILE)
    assert again.int8.model_dump(exclude={"sha256"}) == published.metadata.int8.model_dump(exclude={"sha256"})


def test_quantizing_a_version_without_its_onnx_export_is_one_line(
    trained_store: Path, mnist_dir: Path, tmp_path: Path
) -> None:
    store = ModelStore(Path(shutil.copytree(trained_store, tmp_path / "store")))
    store.update_metadata(store.open().metadata.model_copy(update={"onnx": None}))

    missing = run_cli("training.quantize", "--store", str(store.root), "--version", "9", cwd=tmp_path)
    no_onnx = run_cli(
        "training.quantize", "--store", str(store.root), "--data-dir", str(mnist_dir), cwd=tmp_path
    )

    assert_one_line_error(missing, "python -m training.quantize", "9")
    assert_one_line_error(no_onnx, "python -m training.quantize", "no model.onnx", "export-onnx")


# The rule keeps no test digit, so the error among the kept ones is the mean of nothing.
@pytest.mark.filterwarnings("ignore:Mean of empty slice", "ignore:invalid value encountered")
def test_the_int8_proof_judges_with_the_served_score(
    seed_store: Path, mnist_dir: Path, tmp_path: Path
) -> None:
    """Where the approximate Mahalanobis score is served, the int8 export is measured with it: here
    a served rule whose threshold flags everything shows as every negative flagged."""
    store = ModelStore(Path(shutil.copytree(seed_store, tmp_path / "store")))
    metadata = store.read_metadata(1)
    assert metadata.trust is not None and metadata.trust.approximate is not None
    exact_flagged = metadata.trust.approximate.exact.negatives_flagged
    approximate = metadata.trust.approximate.model_copy(
        update={
            "passed": True,
            "rule": metadata.trust.approximate.rule.model_copy(update={"ood_threshold": -1.0}),
        }
    )
    metadata = metadata.model_copy(
        update={"trust": metadata.trust.model_copy(update={"approximate": approximate})}
    )
    hp = metadata.training.hyperparameters
    held_out, _ = held_out_split(load_split(mnist_dir, "train"), hp["holdout"], hp["seed"], hp.get("limit"))
    export = export_int8(store.version_path(1), metadata, held_out, load_split(mnist_dir, "test"))
    assert exact_flagged < 0.9
    assert export.float32.negatives_flagged == export.int8.negatives_flagged == 1.0
