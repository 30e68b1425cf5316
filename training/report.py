"""Scores and plots for a trained model."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: training runs headless
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from model_store.metadata import Evaluation
from model_store.preprocessing import NUM_CLASSES


def evaluate(predicted: np.ndarray, labels: np.ndarray) -> Evaluation:
    """Accuracy, per-class accuracy and confusion matrix from predicted and true digits."""
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(confusion, (labels.astype(np.int64), predicted.astype(np.int64)), 1)
    correct = int(np.trace(confusion))
    per_class = np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
    return Evaluation(
        accuracy=correct / len(labels),
        correct=correct,
        total=len(labels),
        per_class_accuracy=[round(float(a), 6) for a in per_class],
        confusion_matrix=confusion.tolist(),
    )


def plot_learning_curves(history: dict[str, list[float]], path: Path) -> None:
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, values in history.items():
        epochs = range(1, len(values) + 1)
        if "loss" in key:
            ax_loss.plot(epochs, values, marker=".", label=key)
        elif "accuracy" in key:
            ax_acc.plot(epochs, values, marker=".", label=key)
    for ax, title in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_confusion_matrix(evaluation: Evaluation, path: Path) -> None:
    matrix = np.array(evaluation.confusion_matrix)
    fig, ax = plt.subplots(figsize=(6, 5.5))
    # Log colour scale, so the few mistakes stay visible beside the large diagonal.
    ax.imshow(np.log1p(matrix), cmap="Blues")
    for (row, col), count in np.ndenumerate(matrix):
        if count:
            colour = "white" if row == col else "black"
            ax.text(col, row, str(count), ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(NUM_CLASSES))
    ax.set_yticks(range(NUM_CLASSES))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    ax.set_title(f"test set: {evaluation.correct}/{evaluation.total} correct")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
