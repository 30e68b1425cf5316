"""A digit as a client sends it: image bytes from MNIST's uint8 pixels, for the benchmarks and the
tests alike."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def encode(pixels: np.ndarray, fmt: str = "PNG", **save_args: object) -> bytes:
    """`pixels` (uint8, 28 x 28 or any size) as an image file in `fmt` (PNG by default)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **save_args)  # type: ignore[arg-type]
    return buffer.getvalue()
