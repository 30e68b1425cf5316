"""Plain functions from model outputs to response bodies, shared by the routes that predict."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image

from app.api.schemas import Explanation, ModelRef, Normalisation, Policy
from app.serving import explain
from app.serving.batcher import BatchResult
from app.serving.model import ServingModel
from app.serving.versions import ServingPolicy
from model_store.normalisation import Normalised


def model_ref(model: ServingModel) -> ModelRef:
    return ModelRef(name=model.name, version=model.version)


def policy_of(policy: ServingPolicy) -> Policy:
    return Policy(
        source=policy.source, version=policy.version, pinned_by=policy.pinned_by, pinned_at=policy.pinned_at
    )


def scores(result: BatchResult, index: int) -> dict[str, Any]:
    """The `Scores` fields for image `index` of a batch: argmax, probabilities, verdict. A dict, so
    the response model that extends `Scores` is validated once, not built twice."""
    values = result.probabilities[index].tolist()
    best = values.index(max(values))
    return {
        "prediction_id": result.ids[index],
        "prediction": best,
        "confidence": values[best],
        "probabilities": values,
        "verdict": result.verdict(index),
        "calibrated_confidence": float(result.calibrated_confidence[index]),
    }


def png_bytes(pixels: np.ndarray, scale: int = 1) -> bytes:
    image = Image.fromarray(pixels, mode="L")
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def describe_normalisation(digit: Normalised, include_image: bool) -> Normalisation:
    return Normalisation(
        original_size=digit.original_size,
        original_mode=digit.original_mode,
        steps=digit.steps,
        image_png=base64.b64encode(png_bytes(digit.pixels)).decode() if include_image else None,
    )


OVERLAY_SCALE = 8


def overlay_png(pixels: np.ndarray, attributions: np.ndarray) -> bytes:
    """The digit in grey with the map over it: red where a pixel argued for the digit, blue against."""
    strength = attributions / (np.abs(attributions).max() or 1.0)
    grey = pixels.astype(np.float32) / 255 * 0.6
    rgb = np.stack([grey, grey, grey], axis=-1)
    red, blue = np.clip(strength, 0, 1)[..., None], np.clip(-strength, 0, 1)[..., None]
    rgb = rgb * (1 - red - blue) + red * np.array([1.0, 0.15, 0.1]) + blue * np.array([0.1, 0.35, 1.0])
    image = Image.fromarray(np.uint8(np.clip(rgb, 0, 1) * 255), mode="RGB")
    side = image.width * OVERLAY_SCALE
    buffer = io.BytesIO()
    image.resize((side, side), Image.Resampling.NEAREST).save(buffer, format="PNG")
    return buffer.getvalue()


def describe_explanation(pixels: np.ndarray, found: explain.Attribution) -> Explanation:
    return Explanation(
        method=found.method,
        steps=found.steps,
        patch=found.patch,
        digit=found.digit,
        runner_up=found.runner_up,
        runner_up_probability=float(found.probabilities[found.runner_up]),
        attributions=np.round(found.attributions, 6).tolist(),
        overlay_png=base64.b64encode(overlay_png(pixels, found.attributions)).decode(),
    )
