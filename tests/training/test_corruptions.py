"""MNIST-C's corruptions on real test digits: seeded, shape-preserving, strong enough, ordered by severity."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from model_store.mnist_data import MnistSplit, load_split
from model_store.store import ModelStore
from training.corruptions import MNIST_C, impulse_noise, rotate, shot_noise
from training.robustness import Classifier, classifier

pytestmark = pytest.mark.slow  # scores the session's trained cnn


@pytest.fixture(scope="module")
def digits(mnist_dir: Path) -> MnistSplit:
    return load_split(mnist_dir, "test")


@pytest.fixture(scope="module")
def classify(trained_store: Path) -> Classifier:
    loaded = ModelStore(trained_store).load()
    return classifier(loaded.model, loaded.metadata.input)


def test_there_are_mnist_c_s_fifteen_families() -> None:
    assert len(MNIST_C) == 15
    assert {"shot_noise", "glass_blur", "fog", "zigzag", "canny_edges"} <= set(MNIST_C)


@pytest.mark.parametrize("name", sorted(MNIST_C))
def test_corruption_is_seeded_keeps_shape_and_changes_the_digits(name: str, digits: MnistSplit) -> None:
    images = digits.images[:64]
    corrupt = MNIST_C[name]
    first = corrupt(images, np.random.default_rng(5))
    assert first.shape == images.shape and first.dtype == np.uint8
    np.testing.assert_array_equal(first, corrupt(images, np.random.default_rng(5)))
    # At least 3 grey levels per pixel on average, and at least 10 of the 64 digits visibly changed.
    changed = np.abs(first.astype(np.int16) - images).mean(axis=(1, 2))
    assert changed.mean() > 3 and (changed > 3).sum() >= 10, changed
    np.testing.assert_array_equal(images, digits.images[:64])  # the input is left alone


@pytest.mark.parametrize("name", ["shot_noise", "impulse_noise", "spatter", "fog", "rotate", "zigzag"])
def test_random_families_differ_between_seeds(name: str, digits: MnistSplit) -> None:
    images = digits.images[:32]
    corrupt = MNIST_C[name]
    one, two = (corrupt(images, np.random.default_rng(seed)) for seed in (1, 2))
    assert not np.array_equal(one, two)


@pytest.mark.parametrize("family", [shot_noise, impulse_noise, rotate], ids=lambda f: f.__name__)
def test_stronger_severity_costs_the_session_model_accuracy(
    family: Callable[..., np.ndarray], digits: MnistSplit, classify: Classifier
) -> None:
    images, labels = digits.images[:600], digits.labels[:600]
    accuracy = [
        float(np.mean(classify(partial(family, severity=s)(images, np.random.default_rng(0))) == labels))
        for s in (1, 3, 5)
    ]
    assert accuracy[0] >= accuracy[1] >= accuracy[2], accuracy
    # The session model trains on corrupted digits, so the cost is small, but it is there.
    assert accuracy[0] - accuracy[2] > 0.015, accuracy
