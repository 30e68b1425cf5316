"""Read an uploaded file as an image, within the service's limits, and normalise it.

The normalisation itself (grayscale, polarity, background, crop, fit, centre) lives in
`model_store.normalisation`, shared with training's benchmark; this module adds what only the
service needs: size limits on undecoded bytes and one clear `ImageError` for every bad file.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from model_store.normalisation import Normalised, draft_large_jpeg, normalise_decoded, normalise_native
from model_store.preprocessing import IMAGE_SIDE

__all__ = [
    "ImageError",
    "ImageTooLargeError",
    "Normalised",
    "native_digit",
    "normalise",
    "open_image",
    "read_native_png",
    "sniff_format",
]

ACCEPTED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
# File signatures, to tell a damaged image from something that is not an image at all.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SIGNATURES = {
    PNG_SIGNATURE: "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}

# IHDR of MNIST's own format: 28x28, 8-bit grayscale, standard compression and filters, no interlace.
NATIVE_IHDR = (IMAGE_SIDE, IMAGE_SIDE, 8, 0, 0, 0, 0)
# Chunks that cannot change the pixels Pillow would give. Any other (transparency, gamma, a colour
# profile, an EXIF orientation) sends the file down Pillow's general path.
TEXT_CHUNKS = frozenset({b"tEXt", b"zTXt", b"iTXt"})
PLAIN_CHUNKS = frozenset({b"IHDR", b"IDAT", b"IEND", b"pHYs", b"tIME"}) | TEXT_CHUNKS


class ImageError(ValueError):
    """The upload is not an image we can read; the message says why."""


class ImageTooLargeError(ImageError):
    """The image has more pixels than the configured limit."""


def sniff_format(data: bytes) -> str | None:
    """The format a file's first bytes announce, if any."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((kind for magic, kind in SIGNATURES.items() if data.startswith(magic)), None)


def read_native_png(data: bytes) -> np.ndarray | None:
    """The pixels of a well-formed PNG in MNIST's own format, or None for any other file.

    Most uploads from scripts are such PNGs, and OpenCV decodes them faster than Pillow, header
    parsing, EXIF lookup and the copy into NumPy included (docs/performance.md). The chunk walk checks every
    CRC and the final IEND first, so a file damaged in transit or cut short never reaches libpng
    (which complains on stderr; only a file made with bad pixel data and right checksums gets that
    far). Whatever OpenCV cannot read gives None, and Pillow's path reads it and names the damage."""
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR" or len(data) < 33:
        return None
    if struct.unpack(">IIBBBBB", data[16:29]) != NATIVE_IHDR:
        return None
    offset = len(PNG_SIGNATURE)
    while offset + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        body_end = offset + 8 + length
        if kind not in PLAIN_CHUNKS or body_end + 4 > len(data):
            return None
        if struct.unpack(">I", data[body_end : body_end + 4])[0] != zlib.crc32(data[offset + 4 : body_end]):
            return None
        keyword = data[offset + 8 : body_end].split(b"\0")[0] if kind in TEXT_CHUNKS else b""
        if b"exif" in keyword.lower():
            return None  # "Raw profile type exif": Pillow would read an orientation from it
        if kind == b"IEND":
            try:
                pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            except cv2.error:
                return None
            if pixels is None or pixels.shape != (IMAGE_SIDE, IMAGE_SIDE) or pixels.dtype != np.uint8:
                return None
            return pixels
        offset = body_end + 4
    return None


def native_digit(data: bytes) -> Normalised | None:
    """The digit of a PNG in MNIST's own format, without Pillow; None for any other file."""
    pixels = read_native_png(data)
    return None if pixels is None else normalise_native(pixels)


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Read an image's header and check its size; no pixels are decoded yet."""
    if not data:
        raise ImageError("the image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError as exc:
        kind = sniff_format(data)
        if kind is not None:
            raise ImageError(
                f"the image is corrupt or truncated: it starts as a {kind} but cannot be read"
            ) from exc
        raise ImageError("not a recognised image; send PNG, JPEG, BMP, GIF, WebP or TIFF") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"image rejected as a decompression bomb: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"the image is corrupt or truncated: {exc}") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    if width < 1 or height < 1:
        raise ImageError(f"image has no pixels ({width}x{height})")
    return image


def load_pixels(image: Image.Image) -> Image.Image:
    """Decode the first frame, turning Pillow's many failure types into one clear error."""
    try:
        image.seek(0)
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise ImageError(f"the image is corrupt or truncated: {exc}") from exc
    return image


def normalise(image: Image.Image) -> Normalised:
    """Decode an opened upload and make it an MNIST-style 28x28 uint8 digit, recording each step."""
    size = image.size
    draft_large_jpeg(image)
    normalised = normalise_decoded(load_pixels(image))
    if image.size != size:
        normalised.original_size = size
        normalised.steps.insert(0, f"decoded_at_{image.size[0]}x{image.size[1]}")
    return normalised
