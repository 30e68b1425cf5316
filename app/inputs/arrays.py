"""Binary batch uploads: a `.npy` file or raw bytes holding N 28x28 uint8 images."""

from __future__ import annotations

import io

import numpy as np
from numpy.lib import format as npy_format

from model_store.preprocessing import IMAGE_SIDE

NPY_MAGIC = b"\x93NUMPY"
PIXELS = IMAGE_SIDE * IMAGE_SIDE
ARRAY_SHAPES = "(N, 28, 28), (N, 28, 28, 1) or (N, 784)"
IMAGE_SHAPES = ((IMAGE_SIDE, IMAGE_SIDE), (IMAGE_SIDE, IMAGE_SIDE, 1), (PIXELS,))
NPY_VERSIONS = ((1, 0), (2, 0), (3, 0))


class ArrayError(ValueError):
    pass


class TooManyImagesError(ArrayError):
    pass


def read_npy(body: bytes, max_images: int) -> np.ndarray:
    """The images of a `.npy` file, with its header checked before anything is allocated.

    `np.load` allocates whatever shape the header claims (a few bytes can claim terabytes), so the
    header is read on its own and the pixels are then taken from the body as they are.
    """
    stream = io.BytesIO(body)
    try:
        version = npy_format.read_magic(stream)
        if version not in NPY_VERSIONS:
            raise ValueError(f"unknown .npy format version {version}")
        read_header = (
            npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        )
        shape, fortran_order, dtype = read_header(stream)
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        raise ArrayError(f"not a readable .npy array: {exc}") from exc
    if dtype != np.uint8:
        raise ArrayError(f"array dtype is {dtype}; send uint8 pixels 0-255")
    if len(shape) < 2 or shape[0] < 0 or shape[1:] not in IMAGE_SHAPES:
        raise ArrayError(f"array shape is {shape}; expected {ARRAY_SHAPES}")
    count = shape[0]
    if count > max_images:
        raise TooManyImagesError(f"{count} images in one request; the limit is {max_images}")
    size, offset = count * PIXELS, stream.tell()
    if len(body) - offset < size:
        raise ArrayError(
            f"not a readable .npy array: its header promises {size} bytes of pixels, "
            f"the body holds {len(body) - offset}"
        )
    pixels = np.frombuffer(body, dtype=np.uint8, count=size, offset=offset)
    return pixels.reshape(shape[::-1]).transpose() if fortran_order else pixels.reshape(shape)


def parse_image_array(body: bytes, max_images: int) -> np.ndarray:
    """uint8 images (N, 28, 28) from `.npy` bytes, or from raw N*784 bytes."""
    if body.startswith(NPY_MAGIC):
        array = read_npy(body, max_images)
        count = len(array)
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
