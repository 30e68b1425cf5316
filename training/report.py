"""Scores and plots for a trained model."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: training runs headless
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from model_store.metadata import Evaluation, Robustness
from model_store.preprocessing import NUM_CLASSES

UPLOAD_FAMILY = "upload"
MNIST_C_MEAN = "MNIST-C mean"


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


@contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """A temporary path beside `path`, renamed onto it once written: readers never see half a file."""
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def robustness_rows(robustness: Robustness) -> list[tuple[str, float]]:
    """(family, accuracy) in reading order: clean, the MNIST-C families, their mean, then upload."""
    mnist_c = [(name, acc) for name, acc in robustness.families.items() if name != UPLOAD_FAMILY]
    upload = [(name, acc) for name, acc in robustness.families.items() if name == UPLOAD_FAMILY]
    return [("clean", robustness.clean), *mnist_c, (MNIST_C_MEAN, robustness.mnist_c_mean), *upload]


def robustness_table(robustness: Robustness, title: str) -> str:
    """A markdown table of accuracy per family, for the version folder and the README."""
    lines = [f"### {title}", "", "| family | accuracy |", "|---|---:|"]
    lines += [f"| {name} | {acc:.2%} |" for name, acc in robustness_rows(robustness)]
    lines += ["", f"{robustness.images:,} test images per family, seed {robustness.seed}; "]
    lines[-1] += f"worst MNIST-C family: {robustness.worst_family}."
    return "\n".join(lines) + "\n"


def plot_robustness(robustness: Robustness, path: Path) -> None:
    rows = robustness_rows(robustness)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    colours = [
        "#4c72b0" if name not in ("clean", MNIST_C_MEAN, UPLOAD_FAMILY) else "#dd8452" for name, _ in rows
    ]
    ax.bar(range(len(rows)), [100 * acc for _, acc in rows], color=colours)
    ax.set_xticks(range(len(rows)), [name.replace("_", " ") for name, _ in rows], rotation=60, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(
        f"robustness: MNIST-C mean {robustness.mnist_c_mean:.1%}, upload "
        f"{robustness.families.get(UPLOAD_FAMILY, float('nan')):.1%}"
    )
    fig.tight_layout()
    with replaced_atomically(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def comparison_table(columns: list[tuple[str, Robustness]]) -> str:
    """One markdown table, a column per model: clean, each family, the MNIST-C mean, uploads."""
    names = [name for name, _ in robustness_rows(columns[0][1])]
    scores = [dict(robustness_rows(robustness)) for _, robustness in columns]
    lines = ["| family | " + " | ".join(title for title, _ in columns) + " |"]
    lines.append("|---|" + "---:|" * len(columns))
    lines += [f"| {name} | " + " | ".join(f"{s[name]:.2%}" for s in scores) + " |" for name in names]
    return "\n".join(lines) + "\n"
