"""Response bodies. Each field's description becomes the OpenAPI text at /docs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from model_store.metadata import ModelMetadata
from model_store.pins import Routing
from model_store.trust import Verdict

VERDICT_TEXT = (
    "`digit`: trust the prediction; `unsure`: a digit, but the calibrated confidence is low; "
    "`not_a_digit`: blank, too much ink, or unlike the digits the model was trained on. "
    "The prediction and probabilities are the model's, unchanged, whatever the verdict"
)


class ErrorBody(BaseModel):
    detail: str = Field(examples=["not a recognised image; send PNG, JPEG, BMP, GIF, WebP or TIFF"])


def error_responses(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=`: each status code with the one error body and what it means there."""
    return {code: {"model": ErrorBody, "description": text} for code, text in descriptions.items()}


class ModelRef(BaseModel):
    name: str = Field(examples=["mnist"])
    version: int = Field(examples=[3])


PREDICTION_ID_TEXT = (
    "this answer's id, for POST /feedback: 32 hex digits, sortable by time (a millisecond timestamp, "
    "then 80 random bits)"
)
PREDICTION_ID_EXAMPLE = "0193a1f0c2e84d7fa1b2c3d4e5f60718"


class Scores(BaseModel):
    prediction_id: str = Field(description=PREDICTION_ID_TEXT, examples=[PREDICTION_ID_EXAMPLE])
    prediction: int = Field(ge=0, le=9, description="the most probable digit (argmax)", examples=[8])
    confidence: float = Field(description="probability of the predicted digit", examples=[0.9964])
    probabilities: list[float] = Field(
        description="softmax output for the digits 0-9, summing to 1",
        examples=[[0.0, 0.0, 0.0001, 0.0031, 0.0, 0.0002, 0.0, 0.0, 0.9964, 0.0001]],
    )
    verdict: Verdict = Field(description=VERDICT_TEXT, examples=["digit"])
    calibrated_confidence: float = Field(
        description="top probability after the version's temperature scaling (1 if it has none)",
        examples=[0.9981],
    )


class Normalisation(BaseModel):
    original_size: tuple[int, int] = Field(description="width, height of the upload", examples=[[28, 28]])
    original_mode: str = Field(description="Pillow mode of the upload", examples=["L"])
    steps: list[str] = Field(
        description="what was done to make it an MNIST-style 28x28 digit; empty for native input",
        examples=[["grayscale", "inverted", "cropped", "scaled_to_20x20", "centred_by_mass"]],
    )
    image_png: str | None = Field(
        None, description="base64 PNG of the 28x28 image the model saw (with include_image=true)"
    )


class Explanation(BaseModel):
    """Why the network chose `digit`: an attribution per pixel of the 28x28 image it saw."""

    method: Literal["integrated_gradients", "occlusion"] = Field(
        description="occlusion (forward passes only; the default) or integrated gradients "
        "(MNIST_EXPLAIN_METHOD=integrated_gradients, with TensorFlow)"
    )
    steps: int | None = Field(
        None, description="integrated gradients: points on the path from a black image", examples=[32]
    )
    patch: int | None = Field(None, description="occlusion: side of the square of pixels blacked out")
    digit: int = Field(ge=0, le=9, description="the digit explained: the predicted one", examples=[8])
    runner_up: int = Field(ge=0, le=9, description="the second most probable digit", examples=[3])
    runner_up_probability: float = Field(examples=[0.0002])
    attributions: list[list[float]] = Field(
        description="28 rows of 28: how much each pixel added to (positive) or took from (negative) "
        "the digit's probability against a black image; by integrated gradients they sum to about "
        "p(image) - p(black image)"
    )
    overlay_png: str = Field(
        description="base64 PNG, 224x224: the digit in grey, pixels for the digit in red, against in blue"
    )


class Prediction(Scores):
    model: ModelRef
    normalisation: Normalisation
    explanation: Explanation | None = Field(None, description="with ?explain=true")


class BatchInput(BaseModel):
    filename: str | None = None
    normalisation: Normalisation


class BatchPrediction(BaseModel):
    model: ModelRef
    count: int = Field(examples=[2])
    prediction_ids: list[str] = Field(
        description="each image's prediction id, in request order (for POST /feedback)",
        examples=[[PREDICTION_ID_EXAMPLE, "0193a1f0c2e8e2c61f0b9a8d7c6b5a49"]],
    )
    predictions: list[int] = Field(description="argmax per image, in request order", examples=[[7, 2]])
    confidences: list[float] = Field(description="probability of each predicted digit")
    probabilities: list[list[float]] = Field(description="softmax output per image, shape (count, 10)")
    verdicts: list[Verdict] = Field(description=VERDICT_TEXT, examples=[["digit", "not_a_digit"]])
    calibrated_confidences: list[float] = Field(description="calibrated top probability per image")
    inputs: list[BatchInput] | None = Field(
        None, description="per-file normalisation, for multipart uploads (absent for arrays)"
    )


class TestSample(Scores):
    index: int = Field(examples=[128])
    label: int = Field(description="the true digit", examples=[8])
    correct: bool = Field(examples=[True])
    model: ModelRef


class RandomSamples(BaseModel):
    model: ModelRef
    count: int
    correct: int
    samples: list[TestSample]


class TestAccuracy(BaseModel):
    model: ModelRef
    accuracy: float = Field(examples=[0.9951])
    correct: int = Field(examples=[9951])
    total: int = Field(examples=[10000])
    per_class_accuracy: list[float]
    recorded_accuracy: float = Field(description="accuracy recorded in the model's metadata at training")


class Policy(BaseModel):
    """Which version the store says to serve, and who decided."""

    source: Literal["setting", "admin", "rollout", "newest"] = Field(
        description="MNIST_MODEL_VERSION, an operator's pin (POST /admin/reload), the automatic rollout's "
        "stable version (MNIST_ROLLOUT=auto), or the newest version"
    )
    version: int
    pinned_by: str | None = None
    pinned_at: datetime | None = None


class LoadedVersion(BaseModel):
    version: int
    default: bool = Field(description="answers requests that do not ask for a version")
    weight_bytes: int = Field(description="memory of the version's weights")
    warmup_seconds: float = Field(description="time to load, compile and warm it up")
    runtime: str = Field(
        description="what runs its forward pass: onnxruntime, or tensorflow (MNIST_RUNTIME, or the "
        "fallback for a version without a usable model.onnx)",
        examples=["onnxruntime"],
    )
    precision: Literal["float32", "int8"] = Field(
        description="which export answers: model.onnx, or the int8 model.int8.onnx (MNIST_PRECISION, and "
        "under `auto` the version's publish-time proof)",
        examples=["float32"],
    )


class ShadowReport(BaseModel):
    """One worker's comparison of a shadow candidate with the default, on the same live images."""

    candidate: int
    requests: int
    images: int
    agreement: float | None = Field(description="share of images where both predicted the same digit")
    skipped: int = Field(description="requests not shadowed: queue full or the candidate failed")
    default_mean_ms: float | None
    shadow_mean_ms: float | None


class ModelInfo(BaseModel):
    metadata: ModelMetadata
    plots: dict[str, str] = Field(description="URLs of the version's plots")
    policy: Policy | None = Field(description="the store's choice; null if it cannot be read just now")
    loaded: list[LoadedVersion] = Field(
        default_factory=list, description="every loaded version; each answers on ?version="
    )
    routing: Routing | None = Field(None, description="a canary or shadow beside the default")
    shadow: list[ShadowReport] = Field(default_factory=list)


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Readiness(BaseModel):
    status: str = Field(examples=["ready"])
    model: ModelRef
    test_set_loaded: bool


NOT_A_DIGIT_LABEL = "not_a_digit"
LABEL_TEXT = "the true digit 0-9, or `not_a_digit`"
# Strict: `true` or "7" is not a label a client meant.
Label = Annotated[int, Field(ge=0, le=9, strict=True)] | Literal["not_a_digit"]


class FeedbackRequest(BaseModel):
    """A correction or confirmation of an earlier answer."""

    model_config = ConfigDict(extra="forbid")

    prediction_id: str = Field(
        pattern=r"^[0-9a-f]{32}$",
        description="the answer's `prediction_id`",
        examples=[PREDICTION_ID_EXAMPLE],
    )
    label: Label = Field(description=LABEL_TEXT, examples=[7])


class FeedbackRecord(BaseModel):
    """The feedback as stored."""

    prediction_id: str = Field(description=PREDICTION_ID_TEXT, examples=[PREDICTION_ID_EXAMPLE])
    label: Label = Field(description=LABEL_TEXT, examples=[7])
    predicted: int | None = Field(
        description="the digit answered; null for an image sent with its label and no earlier answer",
        examples=[7],
    )
    correct: bool | None = Field(
        description="whether the answer was right (for `not_a_digit`: whether the verdict said so); "
        "null for a contribution",
        examples=[True],
    )
    model: ModelRef = Field(description="the version that answered (for a contribution: the one served)")
    created_at: datetime = Field(description="when the first feedback on this answer arrived")
    updated_at: datetime = Field(description="when its label was last given")


class Confusion(BaseModel):
    label: int = Field(description="the true digit", examples=[4])
    predicted: int = Field(description="the digit answered", examples=[9])
    count: int = Field(examples=[3])


class Drift(BaseModel):
    """Input drift of one version on the worker that answered (docs/drift.md)."""

    statistic: float | None = Field(
        description="the drift statistic over the last window; null until the first full window",
        examples=[0.031],
    )
    threshold: float = Field(description="drifting above this", examples=[0.082])
    window: int = Field(description="digits in a window", examples=[200])
    seen: int = Field(description="digits this worker has seen this version answer", examples=[1840])
    drifting: bool = Field(examples=[False])
    method: str = Field(description="how the statistic is computed", examples=["mean_shift_7x7"])


class VersionMonitoring(BaseModel):
    version: int = Field(examples=[3])
    answers: int = Field(description="answers logged (and not yet pruned)", examples=[12840])
    feedback: int = Field(description="answers with feedback", examples=[212])
    contributions: int = Field(description="labelled images sent without an earlier answer", examples=[9])
    accuracy: float | None = Field(
        description="share of answers with feedback that were right", examples=[0.97]
    )
    accuracy_interval: tuple[float, float] | None = Field(
        description="95 % Wilson interval of the accuracy", examples=[[0.94, 0.985]]
    )
    confusions: list[Confusion] = Field(description="the commonest mistakes the feedback found, at most 5")
    verdicts: dict[str, int] = Field(
        description="answers by verdict", examples=[{"digit": 12500, "unsure": 290, "not_a_digit": 50}]
    )
    drift: Drift | None = Field(None, description="input drift against the version's training data")


class Monitoring(BaseModel):
    versions: list[VersionMonitoring] = Field(description="every version in the log, newest first")


class DeletedPredictions(BaseModel):
    deleted: int = Field(description="answers deleted, with their feedback", examples=[1520])
