"""The trust table that mnist-train publishes is reproduced from the thresholds in the metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_store.mnist_data import load_split
from model_store.store import ModelStore
from model_store.trust import TRUST_STATISTICS_FILE
from model_store.verdict_rule import ClassStatistics
from training import negatives
from training.calibrate_trust import FeatureReader, error_floor, measure


def chosen_row(table: str) -> dict[str, float]:
    """The chosen method's row of the markdown table, as fractions keyed like `measure`'s."""
    header = [cell.strip() for cell in table.splitlines()[0].strip("|").split("|")]
    line = next(line for line in table.splitlines() if "(chosen)" in line)
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    values = dict(zip(header, cells, strict=True))
    return {
        "kept": float(values["MNIST test kept as digit"].rstrip("%")) / 100,
        "negatives": float(values["all negatives flagged"].rstrip("%")) / 100,
    }


@pytest.mark.slow  # trains the session's cnn
def test_verdict_table_is_reproduced_on_a_subset_with_thresholds_from_metadata(
    trained_store: Path, mnist_dir: Path
) -> None:
    loaded = ModelStore(trained_store).load()
    trust = loaded.metadata.trust
    assert trust is not None, "mnist-train published no trust section"
    assert trust.calibration_samples == 5000
    assert (loaded.path / loaded.metadata.files["reliability_diagram"]).read_bytes()[:4] == b"\x89PNG"
    statistics = ClassStatistics.load(loaded.path / TRUST_STATISTICS_FILE)
    test = load_split(mnist_dir, "test")
    read = FeatureReader(loaded.model)
    families = {
        name: read(images)
        for name, images in negatives.draw(negatives.EVALUATION_SEED, 100, test.images).items()
    }
    subset = np.arange(3000)
    row = measure(trust.rule(), statistics, read(test.images[subset]), test.labels[subset], families)
    published = chosen_row(trust.table)
    assert abs(row["kept"] - published["kept"]) < 0.01, (row, published)
    assert abs(row["negatives"] - published["negatives"]) < 0.08, (row, published)
    assert row["blank"] == 1.0


def test_error_floor_counts_the_errors_left_among_the_most_confident_digits() -> None:
    # Four digits, labels 0; the least confident one is the only error, the most confident right.
    logits = np.array([[9.0, 0.0], [1.0, 1.5], [5.0, 0.0], [2.0, 0.0]])
    labels = np.zeros(4, dtype=int)
    assert error_floor(logits, labels, 1.0, kept=0.75) == 0.0
    assert error_floor(logits, labels, 1.0, kept=1.0) == 0.25
    # Wrong and confident: no ranking by confidence can drop it.
    logits[0] = [0.0, 9.0]
    assert error_floor(logits, labels, 1.0, kept=0.5) == 0.5
