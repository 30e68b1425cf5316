"""Schema of `metadata.json`, written by training and validated by every reader of the store."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from model_store.forward import OnnxExport
from model_store.preprocessing import NUM_CLASSES, InputSpec
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


class FeedbackUsed(BaseModel):
    """The users' corrections a version was trained with (`mnist-train --feedback` or `--feedback-file`)."""

    file_sha256: str = Field(
        description="SHA-256 of the corrections file, or of the examples read from the database"
    )
    # Optional: versions published before corrections came from the database have none.
    source: str | None = Field(
        None, description="the corrections file, or the database's URL without its password"
    )
    examples: int = Field(ge=0, description="corrections in the file")
    trained_on: int = Field(ge=0, description="corrections in the training part")
    held_out: int = Field(ge=0, description="corrections in the hold-out part, never trained on")
    held_out_share: float = Field(ge=0.0, le=1.0, description="share of prediction ids held out")
    per_label: dict[str, int] = Field(description="label ('0'-'9', or 'not_a_digit') -> corrections")
    first_time: datetime | None = Field(description="when the earliest corrected answer was given")
    last_time: datetime | None = Field(description="when the latest corrected answer was given")
    share_of_epoch: float = Field(
        ge=0.0, le=1.0, description="share of each epoch's digits that were corrections (repeats included)"
    )
    repeats: int = Field(ge=0, description="times each training correction was repeated per epoch")
    not_a_digit: str = Field(description="what was done with the 'not a digit' corrections")


# The Keras dtype policies a version can be trained in; it computes in float32 once published.
TrainingDtype = Literal["float32", "mixed_bfloat16"]


class PrecisionChoice(BaseModel):
    """The dtype policy a version trained in, and why: `auto` picks it for the training CPU."""

    requested: str = Field(description="auto, or the policy asked for", examples=["auto"])
    precision: TrainingDtype = Field(description="the Keras dtype policy it trained in", examples=["float32"])
    reason: str = Field(
        description="why that one",
        examples=["the CPU has no native bfloat16 (neither avx512_bf16 nor amx_bf16)"],
    )


class TrainingRecord(BaseModel):
    preset: str
    hyperparameters: dict[str, Any]
    # Optional: versions published before `auto` have none (their hyperparameters hold the policy).
    precision: PrecisionChoice | None = None
    quick: bool = Field(
        False,
        description="a quick first model (`mnist-train --quick`: a subset, one epoch), served until the "
        "full one is published",
    )
    history: dict[str, list[float]]
    train_samples: int
    validation_samples: int
    train_seconds: float
    evaluate_seconds: float
    data_sha256: dict[str, str] = Field(description="SHA-256 of each decompressed IDX file")
    # Optional: versions trained from scratch, or before fine-tuning existed, have none.
    fine_tuned_from: int | None = Field(None, description="the version whose weights training started from")
    feedback: FeedbackUsed | None = Field(None, description="the corrections trained with, if any")


class Robustness(BaseModel):
    """Accuracy on corrupted MNIST test images: MNIST-C's fifteen families and rendered uploads."""

    seed: int = Field(ge=0)
    images: int = Field(gt=0, description="test images per family")
    clean: float = Field(ge=0.0, le=1.0)
    families: dict[str, float] = Field(description="family -> accuracy, MNIST-C's and 'upload'")
    mnist_c_mean: float = Field(ge=0.0, le=1.0, description="mean accuracy over the MNIST-C families")
    worst_family: str
    seconds: float = Field(ge=0.0)


class PrecisionScores(BaseModel):
    """One precision's scores, measured on the same images as the other's."""

    accuracy: float = Field(ge=0.0, le=1.0, description="on the 10,000 MNIST test images")
    negatives_flagged: float = Field(
        ge=0.0, le=1.0, description="share of the evaluation draw of non-digits not judged `digit`"
    )
    mnist_c_mean: float | None = Field(None, description="MNIST-C mean accuracy; None without --robustness")
    uploads: float | None = Field(None, description="accuracy on rendered uploads; None without --robustness")


class Int8Export(BaseModel):
    """The optional `int8` section: the statically quantized export and the proof that decides
    whether it is the version's default serving precision."""

    file: str = Field(description="file name inside the version folder")
    sha256: str = Field(description="SHA-256 of that file")
    size_bytes: int = Field(gt=0)
    onnx_sha256: str = Field(description="SHA-256 of the model.onnx it was quantized from")
    quantizer: str = Field(description="the quantizer and its settings")
    calibration_samples: int = Field(gt=0, description="held-out training images it was calibrated on")
    float32: PrecisionScores
    int8: PrecisionScores
    verdict_agreement: float = Field(
        ge=0.0, le=1.0, description="share of test images given the same verdict by both precisions"
    )
    default: bool = Field(description="whether serving's `auto` precision runs it")
    reason: str = Field(description="why it is, or is not, the default")


class GateScores(BaseModel):
    """One version's numbers the publish-time gate compares."""

    version: int | None = Field(None, ge=1, description="None for the candidate before its number is known")
    mnist_accuracy: float = Field(ge=0.0, le=1.0, description="on the 10,000 MNIST test images")
    holdout_accuracy: float | None = Field(
        None, ge=0.0, le=1.0, description="on the corrections' hold-out digits; None without --feedback"
    )
    negatives_flagged: float | None = Field(
        None, ge=0.0, le=1.0, description="share of the evaluation draw of non-digits not judged `digit`"
    )
    int8_default: bool = Field(description="whether its int8 proof passed")


class Gate(BaseModel):
    """The publish-time proof against the version serving when it was trained: a version that
    fails it is kept, but never served (`ModelStore.open` refuses it, the newest skips it)."""

    passed: bool
    reason: str
    against: GateScores | None = Field(description="the version serving then; None if none was")
    candidate: GateScores
    holdout_examples: int = Field(ge=0, description="hold-out digits both were scored on")


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
    # Optional: versions published before the int8 export, or whose quantization failed, have none.
    int8: Int8Export | None = None
    # Optional: versions published before the gate existed have none, and are served as before.
    gate: Gate | None = None

    @property
    def rejection(self) -> str | None:
        """Why the publish-time gate rejected this version, or None if it may be served."""
        return None if self.gate is None or self.gate.passed else self.gate.reason
