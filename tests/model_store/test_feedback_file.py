from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_store.feedback_file import (
    NOT_A_DIGIT,
    FeedbackExamples,
    FeedbackFileError,
    read_feedback_file,
    write_feedback_file,
)
from model_store.mnist_data import load_split


def test_a_feedback_file_reads_back_as_written(tmp_path: Path, mnist_dir: Path) -> None:
    test = load_split(mnist_dir, "test")
    examples = FeedbackExamples(
        images=test.images[:5],
        labels=np.array([*test.labels[:4], NOT_A_DIGIT], dtype=np.uint8),
        prediction_ids=np.array([f"{i:032x}" for i in range(5)]),
        versions=np.array([1, 1, 2, 2, 3], dtype=np.int32),
        times=np.array(["2026-12-07T05:00:00.123"] * 5, dtype="datetime64[ms]"),
    )
    path = tmp_path / "feedback.npz"
    write_feedback_file(path, examples)
    back = read_feedback_file(path)
    for name in ("images", "labels", "prediction_ids", "versions", "times"):
        assert np.array_equal(getattr(back, name), getattr(examples, name)), name
    assert back.images.dtype == np.uint8 and len(back) == 5


def test_a_file_that_is_not_one_is_refused_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "feedback.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(FeedbackFileError, match=r"feedback\.npz: not a feedback file"):
        read_feedback_file(path)


def test_labels_outside_the_eleven_classes_are_refused() -> None:
    with pytest.raises(FeedbackFileError, match="labels must be 0-10"):
        FeedbackExamples(
            images=np.zeros((1, 28, 28), np.uint8),
            labels=np.array([11], np.uint8),
            prediction_ids=np.array(["x"]),
            versions=np.array([1]),
            times=np.array(["2026-12-07"], dtype="datetime64[ms]"),
        )
