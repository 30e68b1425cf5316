"""Scores and plots from predicted and true digits, checked against values worked out by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model_store.metadata import Evaluation
from training.report import evaluate, plot_confusion_matrix, plot_learning_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_evaluate_counts_hits_misses_and_confusion_exactly() -> None:
    labels = np.array([0, 1, 2, 3, 9, 8, 3], dtype=np.uint8)
    predicted = np.array([0, 1, 2, 2, 9, 9, 3], dtype=np.int64)

    evaluation = evaluate(predicted, labels)

    assert evaluation.correct == 5
    assert evaluation.total == 7
    assert evaluation.accuracy == 5 / 7
    # Digits without samples (4-7) score 0; 3 is right once out of twice; the only 8 was called a 9.
    assert evaluation.per_class_accuracy == [1.0, 1.0, 1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    expected = np.zeros((10, 10), dtype=int)
    for true, guess in [(0, 0), (1, 1), (2, 2), (3, 2), (9, 9), (8, 9), (3, 3)]:
        expected[true, guess] += 1
    assert evaluation.confusion_matrix == expected.tolist()


def test_evaluate_confusion_rows_are_true_digits_and_columns_predictions() -> None:
    labels = np.array([4, 4, 4], dtype=np.uint8)
    predicted = np.array([7, 7, 4])

    matrix = evaluate(predicted, labels).confusion_matrix

    assert matrix[4][7] == 2
    assert matrix[4][4] == 1
    assert matrix[7][4] == 0
    assert [sum(row) for row in matrix] == [0, 0, 0, 0, 3, 0, 0, 0, 0, 0]


def test_evaluate_rounds_per_class_accuracy_to_six_places() -> None:
    labels = np.array([5, 5, 5, 6, 6, 6], dtype=np.uint8)
    predicted = np.array([5, 0, 0, 6, 6, 0])

    evaluation = evaluate(predicted, labels)

    assert evaluation.per_class_accuracy[5] == 0.333333
    assert evaluation.per_class_accuracy[6] == 0.666667
    assert evaluation.accuracy == 0.5
    assert evaluation.correct == 3


def test_evaluate_perfect_predictions() -> None:
    labels = np.repeat(np.arange(10, dtype=np.uint8), 3)

    evaluation = evaluate(labels.copy(), labels)

    assert evaluation.accuracy == 1.0
    assert evaluation.correct == evaluation.total == 30
    assert evaluation.per_class_accuracy == [1.0] * 10
    assert evaluation.confusion_matrix == (np.eye(10, dtype=int) * 3).tolist()


def test_evaluate_all_wrong() -> None:
    labels = np.arange(10, dtype=np.uint8)
    predicted = (labels + 1) % 10

    evaluation = evaluate(predicted, labels)

    assert evaluation.accuracy == 0.0
    assert evaluation.correct == 0
    assert evaluation.per_class_accuracy == [0.0] * 10
    assert all(evaluation.confusion_matrix[d][(d + 1) % 10] == 1 for d in range(10))


def test_plot_learning_curves_writes_a_png(tmp_path: Path) -> None:
    path = tmp_path / "curves.png"
    history = {
        "loss": [0.9, 0.5],
        "accuracy": [0.7, 0.8],
        "val_loss": [1.0, 0.6],
        "val_accuracy": [0.6, 0.75],
    }

    plot_learning_curves(history, path)

    assert path.read_bytes()[:8] == PNG_MAGIC


def test_plot_confusion_matrix_writes_a_png(tmp_path: Path) -> None:
    path = tmp_path / "confusion.png"
    labels = np.array([0, 1, 2, 3, 9, 8, 3], dtype=np.uint8)
    evaluation: Evaluation = evaluate(np.array([0, 1, 2, 2, 9, 9, 3]), labels)

    plot_confusion_matrix(evaluation, path)

    assert path.read_bytes()[:8] == PNG_MAGIC
