"""bench.drift: its measurements on real digits, and its command line's refusals."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from bench.drift import images_to_detect, mixed_windows, share_over
from bench.drift_candidates import InkKs, MeanShift, PooledMmd
from model_store.mnist_data import load_split
from tests.conftest import assert_one_line_error, run_cli
from tests.support.paths import REPO_ROOT

WINDOW = 100


@pytest.fixture(scope="module")
def digits(mnist_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(held-out-like training digits, test digits), both random draws across writers."""
    rng = np.random.default_rng(2)
    train, test = load_split(mnist_dir, "train").images, load_split(mnist_dir, "test").images
    return train[rng.choice(len(train), 2000, replace=False)], test[
        rng.choice(len(test), 3000, replace=False)
    ]


@pytest.mark.parametrize(
    "candidate", [MeanShift("m", ""), PooledMmd("mmd", "", reference_size=300), InkKs("ink", "")]
)
def test_candidates_pass_test_digits_and_catch_noise(
    candidate, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    held_out, test = digits
    candidate.fit(held_out, WINDOW, seed=1, windows=100)
    inside = candidate.features(test)
    noise = candidate.features(np.random.default_rng(3).integers(0, 256, (200, 28, 28), dtype=np.uint8))
    rng = np.random.default_rng(4)
    assert share_over(candidate, mixed_windows(inside, noise, WINDOW, 0.0, 40, rng)) <= 0.1
    assert share_over(candidate, mixed_windows(inside, noise, WINDOW, 1.0, 10, rng)) == 1.0

    args = argparse.Namespace(trials=3, step=10)
    detected = images_to_detect(candidate, inside, noise, WINDOW, args)
    assert detected is not None and detected <= WINDOW
    assert images_to_detect(candidate, inside, inside, WINDOW, args) is None  # test digits never "arrive"


def test_too_small_a_window_is_refused_in_one_line(tmp_path: Path) -> None:
    result = run_cli("bench.drift", "--window", "4", "--out-dir", str(tmp_path), cwd=REPO_ROOT)
    assert result.returncode == 2 and "windows of at least 8 images" in result.stderr.splitlines()[-1]
    assert not list(tmp_path.iterdir())


def test_missing_mnist_files_are_refused_in_one_line(tmp_path: Path) -> None:
    result = run_cli(
        "bench.drift", "--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "out"), cwd=REPO_ROOT
    )
    assert_one_line_error(result, "python -m bench.drift", str(tmp_path))
    assert not (tmp_path / "out").exists()
