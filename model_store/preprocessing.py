"""The one definition of what a model's input looks like: shape, pixel convention and scaling.

Training and serving both call `to_model_input`; neither scales or inverts pixels on its own, so the
two can never drift apart.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict

IMAGE_SIDE = 28
NUM_CLASSES = 10
INPUT_SHAPE = (IMAGE_SIDE, IMAGE_SIDE, 1)
DIGIT_BOX = 20
# A pixel darker than this fraction of the brightest one is background when cropping.
INK_THRESHOLD = 0.1

# MNIST's own convention: 0 is background, 255 is ink (a light digit on a dark field).
Polarity = Literal["light_on_dark", "dark_on_light"]
PROJECT_POLARITY: Polarity = "light_on_dark"


class InputSpec(BaseModel):
    """What a published model expects; recorded in every version's metadata."""

    model_config = ConfigDict(frozen=True)

    shape: tuple[int, int, int] = INPUT_SHAPE
    dtype: Literal["float32"] = "float32"
    polarity: Polarity = PROJECT_POLARITY
    scale: float = 1.0 / 255.0
    description: str = (
        "uint8 pixels of a 28x28 grayscale image, light digit on dark background as in the MNIST "
        "files, multiplied by `scale` to [0, 1]"
    )


DEFAULT_INPUT_SPEC = InputSpec()


def to_model_input(images: np.ndarray, spec: InputSpec = DEFAULT_INPUT_SPEC) -> np.ndarray:
    """Turn uint8 images of shape (N, 28, 28) or (N, 28, 28, 1), MNIST polarity, into model input."""
    if images.dtype != np.uint8:
        raise TypeError(f"expected uint8 pixels, got {images.dtype}")
    height, width, channels = spec.shape
    if images.shape[1:] not in ((height, width), (height, width, channels)):
        raise ValueError(f"expected images of shape (N, {height}, {width}[, {channels}]), got {images.shape}")
    batch = images.reshape((-1, *spec.shape))
    if spec.polarity == "dark_on_light":
        batch = 255 - batch
    return batch.astype(np.float32) * np.float32(spec.scale)


def fit_and_centre(pixels: np.ndarray, steps: list[str]) -> np.ndarray:
    """Crop to the digit, fit it into 20x20 keeping the aspect ratio, centre its mass in 28x28."""
    ink = pixels > INK_THRESHOLD * pixels.max()
    if not ink.any():
        steps.append("blank")
        return np.zeros((IMAGE_SIDE, IMAGE_SIDE), dtype=np.float32)
    rows, cols = np.nonzero(ink)
    digit = pixels[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    height, width = digit.shape
    scale = DIGIT_BOX / max(height, width)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(digit.astype(np.float32), mode="F").resize(new_size, Image.Resampling.LANCZOS)
    box = np.clip(np.asarray(resized), 0, 255)
    steps += ["cropped", "scaled_to_20x20"]

    canvas = np.zeros((IMAGE_SIDE, IMAGE_SIDE), dtype=np.float32)
    top, left = (IMAGE_SIDE - box.shape[0]) // 2, (IMAGE_SIDE - box.shape[1]) // 2
    canvas[top : top + box.shape[0], left : left + box.shape[1]] = box
    total = canvas.sum()
    if total > 0:
        grid_y, grid_x = np.indices(canvas.shape)
        centre = (IMAGE_SIDE - 1) / 2
        shift_y = round(centre - float((grid_y * canvas).sum() / total))
        shift_x = round(centre - float((grid_x * canvas).sum() / total))
        # The box sits in a 4-pixel margin, so a small shift never cuts the digit.
        shift_y = int(np.clip(shift_y, -top, IMAGE_SIDE - top - box.shape[0]))
        shift_x = int(np.clip(shift_x, -left, IMAGE_SIDE - left - box.shape[1]))
        canvas = np.roll(canvas, (shift_y, shift_x), axis=(0, 1))
    steps.append("centred_by_mass")
    return canvas
