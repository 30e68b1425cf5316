"""Turn an uploaded picture into a 28x28 MNIST-style digit.

A 28x28 grayscale light-on-dark image is MNIST's own format and is used as it is. Anything else is
normalised the way MNIST itself was made: grayscale, light digit on dark, cropped to the digit,
scaled to fit a 20x20 box keeping its aspect ratio, then centred by centre of mass in 28x28.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from model_store.preprocessing import IMAGE_SIDE, fit_and_centre

ACCEPTED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
ORIENTATION = 0x0112  # the EXIF tag
# File signatures, to tell a damaged image from something that is not an image at all.
SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}


class ImageError(ValueError):
    """The upload is not an image we can read; the message says why."""


class ImageTooLargeError(ImageError):
    """The image has more pixels than the configured limit."""


@dataclass
class Normalised:
    pixels: np.ndarray  # (28, 28) uint8, light digit on dark
    original_size: tuple[int, int]
    original_mode: str
    steps: list[str] = field(default_factory=list)


def sniff_format(data: bytes) -> str | None:
    """The format a file's first bytes announce, if any."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((kind for magic, kind in SIGNATURES.items() if data.startswith(magic)), None)


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


def to_grayscale(image: Image.Image, steps: list[str]) -> np.ndarray:
    """Grayscale float pixels 0-255. A transparent background makes the alpha channel the digit."""
    image = ImageOps.exif_transpose(image) or image
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        alpha = np.asarray(image.getchannel("A"), dtype=np.float32)
        if alpha.min() < 255:
            steps.append("alpha_as_ink")
            return alpha
        image = image.convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float32)
        low, high = float(values.min()), float(values.max())
        steps.append("rescaled_high_bit_depth")
        return (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    if image.mode != "L":
        steps.append("grayscale")
        image = image.convert("L")
    return np.asarray(image, dtype=np.float32)


def to_light_on_dark(pixels: np.ndarray, steps: list[str]) -> tuple[np.ndarray, float]:
    """Invert when the border (the paper) is lighter than 50 % grey; returns the background level."""
    background = border_level(pixels)
    if background > 127.5:
        steps.append("inverted")
        return 255.0 - pixels, 255.0 - background
    return pixels, background


def remove_background(pixels: np.ndarray, background: float, steps: list[str]) -> np.ndarray:
    """Bring grey paper to black and the strongest ink to white, as in MNIST's scans."""
    peak = float(pixels.max())
    if background > 0 and peak > background:
        steps.append("background_removed")
        return np.clip(pixels - background, 0, None) * (255.0 / (peak - background))
    return pixels


def border_level(pixels: np.ndarray) -> float:
    """Median of the outermost ring of pixels: the paper, for any reasonably framed digit."""
    return float(np.median(np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])))


def is_native(image: Image.Image) -> bool:
    """A 28x28 8-bit grayscale image with no EXIF rotation: MNIST's own format."""
    return (
        image.mode == "L" and image.size == (IMAGE_SIDE, IMAGE_SIDE) and not image.getexif().get(ORIENTATION)
    )


def normalise(image: Image.Image) -> Normalised:
    """Make any opened image an MNIST-style 28x28 uint8 digit, recording each step taken."""
    steps: list[str] = []
    image = load_pixels(image)
    if is_native(image):
        # MNIST's own format is used as it is; only a dark-on-light one is turned around.
        pixels = np.asarray(image)
        if border_level(pixels) > 127.5:
            steps.append("inverted")
            pixels = 255 - pixels
        return Normalised(pixels=pixels, original_size=image.size, original_mode=image.mode, steps=steps)
    grey = to_grayscale(image, steps)
    grey, background = to_light_on_dark(grey, steps)
    if grey.shape != (IMAGE_SIDE, IMAGE_SIDE):
        grey = fit_and_centre(remove_background(grey, background, steps), steps)
    return Normalised(
        pixels=np.clip(np.rint(grey), 0, 255).astype(np.uint8),
        original_size=image.size,
        original_mode=image.mode,
        steps=steps,
    )
