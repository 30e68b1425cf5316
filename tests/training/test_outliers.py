"""Outlier exposure: its non-digits are drawn apart from the negatives that set and measure verdicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_store.mnist_data import load_split
from training import negatives, outliers
from training.batches import CorruptedBatches


def test_training_outliers_use_other_seeds_fonts_photos_and_characters() -> None:
    assert outliers.SEED not in (negatives.VALIDATION_SEED, negatives.EVALUATION_SEED)
    assert not set(outliers.FONTS) & set(negatives.FONTS)
    assert not set(outliers.PHOTOS) & set(negatives.PHOTOS) and "chelsea" not in outliers.PHOTOS  # = cat
    assert set(outliers.LATIN + outliers.GREEK) - set(negatives.LETTERS)  # symbols and Greek too
    assert not set(outliers.FAMILIES.values()) & set(negatives.FAMILIES.values())


def test_pool_is_seeded_in_mnist_form_and_shares_no_image_with_the_evaluation_draw(mnist_dir: Path) -> None:
    test = load_split(mnist_dir, "test").images
    pool = outliers.pool(250)
    assert pool.shape == (250, 28, 28) and pool.dtype == np.uint8
    np.testing.assert_array_equal(pool, outliers.pool(250))
    assert not np.array_equal(pool, outliers.pool(250, seed=outliers.SEED + 1))
    evaluation = np.concatenate(list(negatives.draw(negatives.EVALUATION_SEED, 40, test).values()))
    seen = {image.tobytes() for image in evaluation if image.any()}
    assert not seen & {image.tobytes() for image in pool}


@pytest.fixture(scope="module")
def batches(mnist_dir: Path) -> CorruptedBatches:
    train = load_split(mnist_dir, "train")
    return CorruptedBatches(train.images[:1000], train.labels[:1000], 100, 7, 0.5, outliers.pool(200), 10)


def test_batches_append_outliers_with_a_uniform_target(batches: CorruptedBatches) -> None:
    x, y = batches[3]
    assert x.shape == (110, 28, 28, 1) and x.dtype == np.float32 and y.shape == (110, 10)
    np.testing.assert_allclose(y[-10:], 0.1)
    assert set(y[:100].max(axis=1)) == {1.0} and len(batches) == 10


def test_a_batch_depends_on_seed_epoch_and_index_only(batches: CorruptedBatches) -> None:
    first = batches[2]
    np.testing.assert_array_equal(batches[5][0], batches[5][0])
    np.testing.assert_array_equal(first[0], batches[2][0])
    batches.on_epoch_end()
    try:
        assert not np.array_equal(first[0], batches[2][0])
    finally:
        batches.epoch, batches.order = 0, batches.shuffled()
