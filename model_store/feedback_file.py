"""Labelled examples from the service's feedback, as training reads them: one `.npz` file.

Arrays, one row per example, in the order they were labelled:
- `images`: (N, 28, 28) uint8, light digit on dark, exactly the pixels the model saw;
- `labels`: (N,) uint8, the digit 0-9, or NOT_A_DIGIT (10);
- `prediction_ids`: (N,) str, the answer's id in the service's log;
- `versions`: (N,) int32, the model version that answered (or was served, for a contribution);
- `times`: (N,) datetime64[ms], UTC, when the label was last given;
- `format_version`: () int, FORMAT_VERSION.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_store.preprocessing import IMAGE_SIDE, NUM_CLASSES

FORMAT_VERSION = 1
NOT_A_DIGIT = NUM_CLASSES  # the label after the ten digits


class FeedbackFileError(ValueError):
    """The file is not a feedback file this code reads; the message says what is wrong."""


@dataclass(frozen=True)
class FeedbackExamples:
    images: np.ndarray
    labels: np.ndarray
    prediction_ids: np.ndarray
    versions: np.ndarray
    times: np.ndarray

    def __post_init__(self) -> None:
        count = len(self.labels)
        if self.images.shape != (count, IMAGE_SIDE, IMAGE_SIDE) or self.images.dtype != np.uint8:
            raise FeedbackFileError(
                f"images must be ({count}, 28, 28) uint8, not {self.images.shape} {self.images.dtype}"
            )
        for name in ("prediction_ids", "versions", "times"):
            if len(getattr(self, name)) != count:
                raise FeedbackFileError(f"{name} has {len(getattr(self, name))} rows, labels {count}")
        if count and (self.labels.min() < 0 or self.labels.max() > NOT_A_DIGIT):
            raise FeedbackFileError(f"labels must be 0-{NOT_A_DIGIT}")

    def __len__(self) -> int:
        return len(self.labels)


def write_feedback_file(path: Path, examples: FeedbackExamples) -> None:
    """Write atomically: a reader never sees half a file."""
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("wb") as file:
        np.savez_compressed(
            file,
            images=examples.images.astype(np.uint8),
            labels=examples.labels.astype(np.uint8),
            prediction_ids=examples.prediction_ids.astype(str),
            versions=examples.versions.astype(np.int32),
            times=examples.times.astype("datetime64[ms]"),
            format_version=np.array(FORMAT_VERSION),
        )
    os.replace(partial, path)


def read_feedback_file(path: Path) -> FeedbackExamples:
    try:
        with np.load(path, allow_pickle=False) as data:
            version = int(data["format_version"])
            if version != FORMAT_VERSION:
                raise FeedbackFileError(f"{path}: format version {version}, this code reads {FORMAT_VERSION}")
            return FeedbackExamples(
                images=data["images"],
                labels=data["labels"],
                prediction_ids=data["prediction_ids"],
                versions=data["versions"],
                times=data["times"],
            )
    except FeedbackFileError:
        raise
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise FeedbackFileError(f"{path}: not a feedback file ({exc})") from exc
