"""The one definition of what a model's input looks like: shape, pixel convention and scaling.

Training and serving both call `to_model_input`; neither scales or inverts pixels on its own, so the
two can never drift apart.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

IMAGE_SIDE = 28
NUM_CLASSES = 10
INPUT_SHAPE = (IMAGE_SIDE, IMAGE_SIDE, 1)

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
