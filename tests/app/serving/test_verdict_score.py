"""Which Mahalanobis score a version's verdicts are served with: the low-rank one only where the
publish-time proof passed; the exact one where it failed, and for metadata written before it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.serving.model import ServingModel
from app.serving.runtimes import RuntimeChoice
from model_store.metadata import METADATA_FILE
from model_store.mnist_data import load_split
from model_store.preprocessing import to_model_input
from model_store.store import ModelStore
from model_store.trust import TRUST_STATISTICS_FILE, TrustRule
from model_store.verdict_rule import ClassStatistics, judge
from training import negatives

pytestmark = pytest.mark.slow  # serves the session's trained seed store


@pytest.fixture
def seed_copy(seed_store: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(seed_store, tmp_path / "store"))


@pytest.fixture(scope="module")
def images(mnist_dir: Path) -> np.ndarray:
    """Real test digits and a draw of every family of negatives."""
    test = load_split(mnist_dir, "test").images
    drawn = negatives.draw(negatives.EVALUATION_SEED, 60, test)
    return np.concatenate([test[:3000], *drawn.values()])


def set_proof(store_root: Path, **changes: Any) -> None:
    """Change version 1's `trust.approximate` section."""
    store = ModelStore(store_root)
    metadata = store.read_metadata(1)
    assert metadata.trust is not None and metadata.trust.approximate is not None
    approximate = metadata.trust.approximate.model_copy(update=changes)
    trust = metadata.trust.model_copy(update={"approximate": approximate})
    store.update_metadata(metadata.model_copy(update={"trust": trust}))


def served_codes(store_root: Path, images: np.ndarray) -> tuple[ServingModel, np.ndarray]:
    serving = ServingModel.compile(ModelStore(store_root).open(1), RuntimeChoice(threads=1))
    return serving, serving.answer(images)[:, 11].astype(int)


def judged(
    serving: ServingModel, images: np.ndarray, rule: TrustRule, statistics: ClassStatistics
) -> np.ndarray:
    """The verdicts `judge` gives with `rule` on the served forward pass's own outputs."""
    _, logits, features = serving.forward_float(to_model_input(images, serving.loaded.metadata.input))
    return judge(images, logits, features, rule, statistics).codes


def rules(store_root: Path) -> tuple[TrustRule, TrustRule, ClassStatistics]:
    """(the exact rule, the approximate rule, the statistics with the factors) of version 1."""
    loaded = ModelStore(store_root).open(1)
    trust = loaded.metadata.trust
    assert trust is not None and trust.approximate is not None
    return trust.rule(), trust.approximate.rule, ClassStatistics.load(loaded.path / TRUST_STATISTICS_FILE)


def test_a_passed_proof_serves_the_approximate_verdict(seed_copy: Path, images: np.ndarray) -> None:
    set_proof(seed_copy, passed=True, reason="rank used: within the limits")
    exact, approximate, statistics = rules(seed_copy)
    serving, codes = served_codes(seed_copy, images)
    assert serving.rule == approximate and serving.rule.rank is not None
    expected, other = (
        judged(serving, images, approximate, statistics),
        judged(serving, images, exact, statistics),
    )
    assert (expected != other).any(), "the two scores agree on every image: the test tells nothing"
    np.testing.assert_array_equal(codes, expected)


def test_a_failed_proof_serves_the_exact_verdict(seed_copy: Path, images: np.ndarray) -> None:
    set_proof(seed_copy, passed=False, reason="rank not used: digits kept differ")
    exact, _, statistics = rules(seed_copy)
    serving, codes = served_codes(seed_copy, images)
    assert serving.rule == exact and serving.rule.rank is None
    np.testing.assert_array_equal(codes, judged(serving, images, exact, statistics))


def test_a_passed_proof_without_its_factors_in_the_file_serves_the_exact_verdict(
    seed_copy: Path, images: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    set_proof(seed_copy, passed=True)
    exact, _, statistics = rules(seed_copy)
    path = ModelStore(seed_copy).version_path(1) / TRUST_STATISTICS_FILE
    np.savez(path, means=statistics.means, precision=statistics.precision)

    serving, codes = served_codes(seed_copy, images)
    assert serving.rule == exact
    assert "factors missing" in caplog.text
    np.testing.assert_array_equal(codes, judged(serving, images, exact, statistics))


def test_metadata_and_statistics_from_before_the_approximation_serve_as_before(
    seed_copy: Path, images: np.ndarray
) -> None:
    """Old files: no `approximate` and no `rank` in the metadata, two arrays in trust.npz."""
    exact, _, statistics = rules(seed_copy)
    path = ModelStore(seed_copy).version_path(1)
    raw = json.loads((path / METADATA_FILE).read_text())
    del raw["trust"]["approximate"], raw["trust"]["rank"]
    (path / METADATA_FILE).write_text(json.dumps(raw))
    np.savez(path / TRUST_STATISTICS_FILE, means=statistics.means, precision=statistics.precision)

    serving, codes = served_codes(seed_copy, images)
    assert serving.statistics is not None and serving.statistics.low_rank is None
    assert serving.rule == exact
    np.testing.assert_array_equal(codes, judged(serving, images, exact, statistics))


def test_the_proof_and_the_factors_survive_a_round_trip(seed_copy: Path) -> None:
    store = ModelStore(seed_copy)
    metadata = store.read_metadata(1)
    store.update_metadata(metadata)
    assert store.read_metadata(1) == metadata
    assert metadata.trust is not None and metadata.trust.approximate is not None

    statistics = ClassStatistics.load(store.version_path(1) / TRUST_STATISTICS_FILE)
    statistics.save(seed_copy / "again.npz")
    again = ClassStatistics.load(seed_copy / "again.npz")
    assert statistics.low_rank is not None and again.low_rank is not None
    assert again.low_rank.rank == metadata.trust.approximate.rule.rank
    for name in ("means", "basis", "weights"):
        np.testing.assert_array_equal(getattr(again.low_rank, name), getattr(statistics.low_rank, name))
    assert again.low_rank.isotropic == statistics.low_rank.isotropic
    np.testing.assert_array_equal(again.precision, statistics.precision)
