"""Turn a decoded picture into a 28x28 MNIST-style digit: the one normalisation of uploads.

The service runs every decoded upload through it (`app.inputs.imaging` decodes), and training's
robustness benchmark reads its rendered uploads back through it too, so what the model is measured
on is what it is served. A 28x28 grayscale light-on-dark image is MNIST's
own format and is used as it is. Anything else is normalised the way MNIST itself was made:
grayscale, light digit on dark, the paper's local level removed (shadows, uneven light) and its
ruled lines with it, cropped to the digit, scaled to fit a 20x20 box keeping its aspect ratio, then
centred by centre of mass in 28x28.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import cv2
import numpy as np
from PIL import Image, ImageOps

from model_store.preprocessing import IMAGE_SIDE

DIGIT_BOX = 20
ORIENTATION = 0x0112  # the EXIF tag
# A pixel darker than this fraction of the brightest one is background when cropping.
INK_THRESHOLD = 0.1
# "border": one paper level, the border's median. "flat": the paper's level around every pixel, so
# that shadows and uneven light are not read as ink, and ruled lines and faint marks are dropped.
Background = Literal["border", "flat"]
SERVICE_BACKGROUND: Background = "flat"
FLAT_SIDE = 64  # the paper's level is estimated on a copy this many pixels on its longer side
FLAT_WINDOW = 0.35  # wider than any stroke, even a marker's: a third of that copy's shorter side
FAINT = 0.15  # after flattening, marks fainter than this fraction of the darkest ink are paper
RULE_STRETCHES = 16  # a ruled line is found as ink in every one of this many stretches of its row
RULE_LEVEL = 0.6  # ...fainter than this fraction of the darkest ink

# Large JPEGs are decoded at a reduced scale, keeping at least this many pixels on each side.
JPEG_DRAFT_SIDE = 512


@dataclass
class Normalised:
    pixels: np.ndarray  # (28, 28) uint8, light digit on dark
    original_size: tuple[int, int]
    original_mode: str
    steps: list[str] = field(default_factory=list)


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
    """Invert when the ink is darker than the border (the paper); returns the background level."""
    background = border_level(pixels)
    if is_dark_ink(pixels, background):
        steps.append("inverted")
        return 255.0 - pixels, 255.0 - background
    return pixels, background


def is_dark_ink(pixels: np.ndarray, paper: float) -> bool:
    """Whether the darkest pixel stands further below the paper than the lightest one above it.

    Compared as ratios, not as differences or against 50 % grey: light multiplies, and a shadow or
    a dim photo can take white paper below mid-grey while its ink stays a small fraction of it.
    """
    darkest, lightest = float(pixels.min()), float(pixels.max())
    return (paper + 1) / (darkest + 1) > (lightest + 1) / (paper + 1)


def remove_background(pixels: np.ndarray, background: float, steps: list[str]) -> np.ndarray:
    """Bring grey paper to black and the strongest ink to white, as in MNIST's scans."""
    peak = float(pixels.max())
    if background > 0 and peak > background:
        steps.append("background_removed")
        return np.clip(pixels - background, 0, None) * (255.0 / (peak - background))
    return pixels


def paper_level(pixels: np.ndarray) -> np.ndarray:
    """Light-on-dark pixels' background around each point: a grey opening wider than any stroke,
    on a copy reduced to FLAT_SIDE px (area averaging), brought back to size bilinearly."""
    # All in OpenCV on NumPy arrays: Pillow's float resizes, and the copies into and out of its
    # images, were most of the cost of normalising a photo (docs/performance.md, "Measured").
    height, width = pixels.shape
    factor = min(1.0, FLAT_SIDE / max(height, width))
    small = cv2.resize(
        np.asarray(pixels, dtype=np.float32),
        (max(1, round(width * factor)), max(1, round(height * factor))),
        interpolation=cv2.INTER_AREA,
    )
    window = max(3, int(FLAT_WINDOW * min(small.shape)) | 1)
    square = cv2.getStructuringElement(cv2.MORPH_RECT, (window, window))
    opened = cv2.morphologyEx(small, cv2.MORPH_OPEN, square, borderType=cv2.BORDER_REPLICATE)
    return cv2.resize(opened, (width, height), interpolation=cv2.INTER_LINEAR)


def flatten_background(pixels: np.ndarray, steps: list[str]) -> np.ndarray:
    """Ink as the fraction of the local paper's light it absorbs, faint marks dropped, 0-255."""
    background = np.clip(paper_level(pixels), 0, 254)
    ink = np.clip(pixels - background, 0, None) / (255 - background)
    peak = float(ink.max())
    if peak <= 0:
        return np.zeros_like(pixels)
    steps.append("background_flattened")
    ink /= peak
    ink = remove_rules(ink)
    return np.where(ink >= FAINT, ink, 0) * 255


def remove_rules(ink: np.ndarray) -> np.ndarray:
    """Ink 0-1 with ruled lines taken out: a row's faint level that spans its whole width.

    A ruled line crosses the page, so every stretch of its row holds at least the line's ink, while
    a row of paper or of the digit alone has an empty stretch somewhere. That level is removed from
    the row and the rest stretched back to 0-1, so the digit's strokes crossing the line keep their
    ink. A level as dark as ink is no ruling (a stroke across the page) and is left alone.
    """
    level = (stretch_means(ink.shape[1]) @ ink.T).min(axis=0)
    rows = np.flatnonzero((level > 0) & (level < RULE_LEVEL))
    if not len(rows):
        return ink
    ruled = level[rows, None]
    ink[rows] = np.maximum((ink[rows] - ruled) / (1 - ruled), 0)
    return ink


@lru_cache(maxsize=16)
def stretch_means(width: int) -> np.ndarray:
    """Weights (stretches, width) that turn a row into the mean of each stretch of it, by one product.

    A matrix product: NumPy's sums over many short stretches cost more per row (docs/performance.md).
    """
    count = min(RULE_STRETCHES, width)
    member = (np.arange(width) * count // width == np.arange(count)[:, None]).astype(np.float32)
    weights = member / member.sum(axis=1, keepdims=True)
    weights.flags.writeable = False  # shared by every call with this width
    return weights


def fit_and_centre(pixels: np.ndarray, steps: list[str]) -> np.ndarray:
    """Crop to the digit, fit it into 20x20 keeping the aspect ratio, centre its mass in 28x28."""
    ink = pixels > INK_THRESHOLD * pixels.max()
    if not ink.any():
        steps.append("blank")
        return np.zeros((IMAGE_SIDE, IMAGE_SIDE), dtype=np.float32)
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    digit = pixels[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = digit.shape
    scale = DIGIT_BOX / max(height, width)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(digit.astype(np.float32), mode="F").resize(new_size, Image.Resampling.LANCZOS)
    box = np.clip(np.asarray(resized), 0, 255)
    steps += ["cropped", "scaled_to_20x20"]

    canvas = np.zeros((IMAGE_SIDE, IMAGE_SIDE), dtype=np.float32)
    top, left = (IMAGE_SIDE - box.shape[0]) // 2, (IMAGE_SIDE - box.shape[1]) // 2
    total = float(box.sum(dtype=np.float64))
    if total > 0:
        # Centre of mass by the box's row and column sums: the same as over the canvas, smaller.
        centre = (IMAGE_SIDE - 1) / 2
        mass_y = top + float(box.sum(axis=1, dtype=np.float64) @ np.arange(box.shape[0])) / total
        mass_x = left + float(box.sum(axis=0, dtype=np.float64) @ np.arange(box.shape[1])) / total
        # The box sits in a 4-pixel margin, so a small shift never cuts the digit.
        top += min(max(round(centre - mass_y), -top), IMAGE_SIDE - top - box.shape[0])
        left += min(max(round(centre - mass_x), -left), IMAGE_SIDE - left - box.shape[1])
    canvas[top : top + box.shape[0], left : left + box.shape[1]] = box
    steps.append("centred_by_mass")
    return canvas


def border_level(pixels: np.ndarray) -> float:
    """Median of the outermost ring of pixels: the paper, for any reasonably framed digit."""
    ring = np.sort(np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]]), axis=None)
    middle = len(ring) // 2
    # The median by hand: np.median's generality costs a 28x28 upload more than its decoding.
    return float(ring[middle]) if len(ring) % 2 else (float(ring[middle - 1]) + float(ring[middle])) / 2


def is_native(image: Image.Image) -> bool:
    """A 28x28 8-bit grayscale image with no EXIF rotation: MNIST's own format."""
    return (
        image.mode == "L" and image.size == (IMAGE_SIDE, IMAGE_SIDE) and not image.getexif().get(ORIENTATION)
    )


def normalise_native(pixels: np.ndarray) -> Normalised:
    """MNIST's own format (28x28 uint8 grayscale) is used as it is; only a dark-on-light one is
    turned around."""
    steps = []
    if border_level(pixels) > 127.5:
        steps.append("inverted")
        pixels = 255 - pixels
    return Normalised(pixels=pixels, original_size=(IMAGE_SIDE, IMAGE_SIDE), original_mode="L", steps=steps)


def draft_large_jpeg(image: Image.Image) -> None:
    """Ask libjpeg to decode a large JPEG at 1/2, 1/4 or 1/8 scale: a phone photo is decoded in a
    fraction of the time and memory, still far larger than the 20-pixel box the digit ends in.
    Call before the pixels are loaded."""
    if image.format == "JPEG" and image.mode in ("L", "RGB") and max(image.size) > 2 * JPEG_DRAFT_SIDE:
        image.draft("L", (JPEG_DRAFT_SIDE, JPEG_DRAFT_SIDE))


def normalise_file(data: bytes) -> Normalised:
    """The bytes of an image file as the service normalises an upload (without its size limits and
    error messages): what a client that sends tensors instead of files must do first."""
    image = Image.open(io.BytesIO(data))
    size = image.size
    draft_large_jpeg(image)
    return normalise_decoded(image, original_size=size)


def normalise_decoded(
    image: Image.Image,
    background: Background = SERVICE_BACKGROUND,
    original_size: tuple[int, int] | None = None,
) -> Normalised:
    """Make a decoded image an MNIST-style 28x28 uint8 digit, recording each step taken.
    `original_size`: the size the file declared, when it was decoded at a reduced scale."""
    if is_native(image):
        return normalise_native(np.asarray(image))
    steps: list[str] = []
    grey = to_grayscale(image, steps)
    grey, level = to_light_on_dark(grey, steps)
    if grey.shape != (IMAGE_SIDE, IMAGE_SIDE):
        if background == "flat":
            grey = flatten_background(grey, steps)
        else:
            grey = remove_background(grey, level, steps)
        grey = fit_and_centre(grey, steps)
    if original_size is not None and original_size != image.size:
        steps.insert(0, f"decoded_at_{image.size[0]}x{image.size[1]}")
    return Normalised(
        pixels=np.clip(np.rint(grey), 0, 255).astype(np.uint8),
        original_size=original_size or image.size,
        original_mode=image.mode,
        steps=steps,
    )
