"""Plain functions from model outputs to response bodies, shared by the routes that predict."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from app.api.schemas import ModelRef, Normalisation, Policy, Scores
from app.inputs.imaging import Normalised
from app.serving.inference import ServingModel
from app.serving.reload import ServingPolicy


def model_ref(model: ServingModel) -> ModelRef:
    return ModelRef(name=model.name, version=model.version)


def policy_of(policy: ServingPolicy) -> Policy:
    return Policy(
        source=policy.source, version=policy.version, pinned_by=policy.pinned_by, pinned_at=policy.pinned_at
    )


def scores(probabilities: np.ndarray) -> Scores:
    values = probabilities.tolist()
    best = int(np.argmax(probabilities))
    return Scores(prediction=best, confidence=values[best], probabilities=values)


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
