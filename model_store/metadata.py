"""Schema of `metadata.json`, written by training and validated by every reader of the store."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from model_store.preprocessing import NUM_CLASSES, InputSpec
from model_store.runtimes import OnnxExport
from model_store.trust import Trust

METADATA_FILE = "metadata.json"
MODEL_FILE = "model.keras"
LEARNING_CURVES_FILE = "learning_curves.png"
CONFUSION_MATRIX_FILE = "confusion_matrix.png"
SAVED_MODEL_FILE = "saved_model.pb"
ROBUSTNESS_TABLE_FILE = "robustness.md"
ROBUSTNESS_CHART_FILE = "robustness.png"


class Evaluation(BaseModel):
    """Scores on the 10,000 MNIST test images."""

    accuracy: float = Field(ge=0.0, le=1.0)
    correct: int = Field(ge=0)
    total: int = Field(gt=0)
    per_class_accuracy: list[float] = Field(min_length=NUM_CLASSES, max_length=NUM_CLASSES)
    confusion_matrix: list[list[int]] = Field(description="rows are true digits, columns predicted digits")


class TrainingRecord(BaseModel):
    preset: str
    hyperparameters: dict[str, Any]
    history: dict[str, list[float]]
    train_samples: int
    validation_samples: int
    train_seconds: float
    evaluate_seconds: float
    data_sha256: dict[str, str] = Field(description="SHA-256 of each decompressed IDX file")


class Robustness(BaseModel):
    """Accuracy on corrupted MNIST test images: MNIST-C's fifteen families and rendered uploads."""

    seed: int = Field(ge=0)
    images: int = Field(gt=0, description="test images per family")
    clean: float = Field(ge=0.0, le=1.0)
    families: dict[str, float] = Field(description="family -> accuracy, MNIST-C's and 'upload'")
    mnist_c_mean: float = Field(ge=0.0, le=1.0, description="mean accuracy over the MNIST-C families")
    worst_family: str
    seconds: float = Field(ge=0.0)


class ModelMetadata(BaseModel):
    name: str
    version: int = Field(ge=1)
    created_at: datetime
    input: InputSpec
    num_classes: int = NUM_CLASSES
    evaluation: Evaluation
    training: TrainingRecord
    library_versions: dict[str, str]
    files: dict[str, str] = Field(description="role -> file name inside the version folder")
    trust: Trust | None = Field(
        None, description="calibration and verdict thresholds; absent in versions published before them"
    )
    # Optional: versions published before the benchmark existed, or without it, have none.
    robustness: Robustness | None = None
    # Optional: versions published before the ONNX export, or whose export failed, have none.
    onnx: OnnxExport | None = None
