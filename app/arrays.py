"""Binary batch uploads: a `.npy` file or raw bytes holding N 28x28 uint8 images."""

from __future__ import annotations

import io

import numpy as np

from model_store.preprocessing import IMAGE_SIDE

NPY_MAGIC = b"\x93NUMPY"
PIXELS = IMAGE_SIDE * IMAGE_SIDE
ARRAY_SHAPES = "(N, 28, 28), (N, 28, 28, 1) or (N, 784)"


class ArrayError(ValueError):
    pass


class TooManyImagesError(ArrayError):
    pass


def parse_image_array(body: bytes, max_images: int) -> np.ndarray:
    """uint8 images (N, 28, 28) from `.npy` bytes, or from raw N*784 bytes."""
    if body.startswith(NPY_MAGIC):
        try:
            array = np.load(io.BytesIO(body), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ArrayError(f"not a readable .npy array: {exc}") from exc
        if array.dtype != np.uint8:
            raise ArrayError(f"array dtype is {array.dtype}; send uint8 pixels 0-255")
        count = array.shape[0] if array.ndim else 0
        if array.shape[1:] not in ((IMAGE_SIDE, IMAGE_SIDE), (IMAGE_SIDE, IMAGE_SIDE, 1), (PIXELS,)):
            raise ArrayError(f"array shape is {array.shape}; expected {ARRAY_SHAPES}")
    else:
        if len(body) % PIXELS:
            raise ArrayError(
                f"raw body is {len(body)} bytes, not a multiple of 784 (28x28 uint8 per image); "
                "or send a .npy file"
            )
        count = len(body) // PIXELS
        array = np.frombuffer(body, dtype=np.uint8)
    if count == 0:
        raise ArrayError("the array holds no images")
    if count > max_images:
        raise TooManyImagesError(f"{count} images in one request; the limit is {max_images}")
    return np.ascontiguousarray(array.reshape(count, IMAGE_SIDE, IMAGE_SIDE))
