"""Corrupted training digits, drawn afresh for every batch: what lets the `cnn` survive MNIST-C and uploads.

Every function takes float32 digits (N, 28, 28) in [0, 1], MNIST polarity, and a seeded generator,
and returns float32 digits of the same shape in [0, 1]. None of them is the benchmark's code at the
benchmark's settings (`training/corruptions.py`, `training/synthetic_photos.py`): each draws its strength from
a continuous range rather than MNIST-C's one severity, and most are other algorithms (a noise field
instead of a diamond-square plasma, an outline instead of Canny, pixels gathered from random
neighbours instead of swapped in sequence, ...). The README's Robustness section tables the differences.

`corrupt` picks for each image none, one or two of these at random, after a random affine warp.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from model_store.preprocessing import IMAGE_SIDE
from training.corruptions import CENTRE, sample

Augmentation = Callable[[np.ndarray, np.random.Generator], np.ndarray]

# (low, high) of each drawn parameter; the benchmark's own value is in the comment where it has one.
ROTATION = 0.6  # radians either way (MNIST-C rotate: exactly +-0.4)
SHEAR = 0.6  # (MNIST-C shear: exactly +-0.4)
ZOOM = (0.6, 1.15)  # (MNIST-C scale: exactly 0.7)
SHIFT = 3.5  # px either way, each axis (MNIST-C translate: exactly 3 on both axes)
BLUR_SIGMAS = (0.6, 1.0, 1.5)  # (MNIST-C glass blur: 0.7, twice, around pixel swaps)
STREAK = (2.0, 9.0)  # px, uniform taps (MNIST-C motion blur: Gaussian-weighted, radius 10, sigma 3)
LOW_SIDES = (7, 16)  # the digit drawn at 7-15 px and enlarged
GAUSSIAN_NOISE = (0.05, 0.45)
SPECKLE = (0.02, 0.35)  # share of pixels replaced (MNIST-C impulse: exactly 0.17, to 0 or 1)
SIGNAL_NOISE = (2.0, 40.0)  # photons at full ink (MNIST-C shot noise: Poisson at rate 3)
OFFSET = (0.1, 0.85)  # added to every pixel (MNIST-C brightness: exactly 0.5)
CONTRAST = (0.25, 1.0)
HAZE = (0.3, 4.0)  # strength of a smooth noise field (MNIST-C fog: plasma at strength 3)
BAND = (2, 11)  # px width of inverted bands (MNIST-C stripe: exactly 7 px on both sides)


def clip(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0, 1).astype(np.float32)


def per_image(rng: np.random.Generator, bounds: tuple[float, float], n: int) -> np.ndarray:
    """One value per image, uniform in `bounds`, shaped to broadcast over (n, 28, 28)."""
    return rng.uniform(*bounds, size=(n, 1, 1)).astype(np.float32)


def grid() -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.indices((IMAGE_SIDE, IMAGE_SIDE), dtype=np.float32)
    return rows, cols


def affine(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotation, shear, zoom and shift together, each drawn per image."""
    n = len(x)
    angle, skew = rng.uniform(-ROTATION, ROTATION, n), rng.uniform(-SHEAR, SHEAR, n)
    zoom = np.exp(rng.uniform(np.log(ZOOM[0]), np.log(ZOOM[1]), n))
    cos, sin, tan = np.cos(angle), np.sin(angle), np.tan(skew)
    # Output pixel -> input pixel: (rotation @ shear) / zoom, about the centre, then shifted.
    m = np.stack([np.stack([cos, cos * tan - sin], 1), np.stack([sin, sin * tan + cos], 1)], 1)
    m /= zoom[:, None, None]
    rows, cols = grid()
    rows, cols = rows - CENTRE, cols - CENTRE
    shift = rng.uniform(-SHIFT, SHIFT, (2, n, 1, 1))
    src_c = m[:, 0, 0, None, None] * cols + m[:, 0, 1, None, None] * rows + CENTRE + shift[0]
    src_r = m[:, 1, 0, None, None] * cols + m[:, 1, 1, None, None] * rows + CENTRE + shift[1]
    return sample(x, src_r, src_c)


def shift(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Whole-pixel moves of up to SHIFT px on each axis: the light touch for uncorrupted digits."""
    rows, cols = grid()
    reach = int(SHIFT)
    d_rows, d_cols = rng.integers(-reach, reach + 1, size=(2, len(x), 1, 1))
    return sample(x, rows + d_rows, cols + d_cols)


def thicken(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A wider pen: grey dilation by a 2x2 square or a 3x3 cross, partly blended in."""
    size = 2 if rng.random() < 0.5 else 3
    footprint = np.ones((1, size, size), bool) if size == 2 else ndimage.generate_binary_structure(2, 1)[None]
    wide = ndimage.grey_dilation(x, footprint=footprint)
    share = per_image(rng, (0.5, 1.0), len(x))
    return clip(x + share * (wide - x))


def thin(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A finer pen: grey erosion by a 2x2 square, partly blended so thin strokes are not wiped out."""
    narrow = ndimage.grey_erosion(x, footprint=np.ones((1, 2, 2), bool))
    share = per_image(rng, (0.4, 0.9), len(x))
    return clip(x + share * (narrow - x))


def low_resolution(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Drawn small (7-15 px) and enlarged back to 28, nearest or linear."""
    out = np.empty_like(x)
    sides = rng.integers(*LOW_SIDES, size=len(x))
    for side in np.unique(sides):
        chosen = sides == side
        small = ndimage.zoom(
            x[chosen], (1, side / IMAGE_SIDE, side / IMAGE_SIDE), order=1, grid_mode=True, mode="nearest"
        )
        order = int(rng.integers(0, 2))
        out[chosen] = ndimage.zoom(
            small, (1, IMAGE_SIDE / side, IMAGE_SIDE / side), order=order, grid_mode=True, mode="nearest"
        )[:, :IMAGE_SIDE, :IMAGE_SIDE]
    return clip(out)


def gaussian_blur(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = np.empty_like(x)
    sigmas = rng.integers(len(BLUR_SIGMAS), size=len(x))
    for i, sigma in enumerate(BLUR_SIGMAS):
        chosen = sigmas == i
        out[chosen] = ndimage.gaussian_filter(x[chosen], sigma=(0, sigma, sigma))
    return out


def streak(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Motion: the mean of 9 copies shifted along a random direction, over 2-9 px, one or two sided."""
    n = len(x)
    angle = rng.uniform(-np.pi, np.pi, (n, 1, 1))
    length = per_image(rng, STREAK, n)
    start = np.where(rng.random((n, 1, 1)) < 0.5, 0.0, -0.5)
    rows, cols = grid()
    taps = [
        sample(x, rows + (start + t) * length * np.sin(angle), cols + (start + t) * length * np.cos(angle))
        for t in np.linspace(0, 1, 9)
    ]
    return np.mean(taps, axis=0).astype(np.float32)


def jitter(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Frosted glass: each pixel read from a random neighbour up to 1-2 px away, then a light blur."""
    reach = int(rng.integers(1, 3))
    rows, cols = grid()
    d_rows, d_cols = rng.integers(-reach, reach + 1, size=(2, *x.shape))
    gathered = sample(x, rows + d_rows, cols + d_cols, clamp=True)
    return ndimage.gaussian_filter(gathered, sigma=(0, 0.6, 0.6))


def outline(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Only a 1-px contour of the strokes (inner, outer or both): edge images without Canny."""
    ink = x > rng.uniform(0.3, 0.6)
    cross = ndimage.generate_binary_structure(2, 1)[None]
    inner = ink & ~ndimage.binary_erosion(ink, cross)
    outer = ndimage.binary_dilation(ink, cross) & ~ink
    kind = rng.integers(3, size=(len(x), 1, 1))
    return np.where(kind == 0, inner, np.where(kind == 1, outer, inner | outer)).astype(np.float32)


def gaussian_noise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sigma = per_image(rng, GAUSSIAN_NOISE, len(x))
    return clip(x + sigma * rng.standard_normal(x.shape, dtype=np.float32))


def speckle(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Salt and pepper of random brightness: a share of the pixels become light or dark."""
    hit = rng.random(x.shape, dtype=np.float32) < per_image(rng, SPECKLE, len(x))
    light = rng.random(x.shape, dtype=np.float32) < 0.5
    values = np.where(light, rng.uniform(0.6, 1, x.shape), rng.uniform(0, 0.25, x.shape))
    return np.where(hit, values, x).astype(np.float32)


def signal_noise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Photon noise, approximated as Gaussian with a variance proportional to the signal."""
    photons = per_image(rng, SIGNAL_NOISE, len(x))
    return clip(x + np.sqrt(x / photons) * rng.standard_normal(x.shape, dtype=np.float32))


def lighten(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A raised background and lowered contrast: a washed-out or over-exposed scan."""
    offset, contrast = per_image(rng, OFFSET, len(x)), per_image(rng, CONTRAST, len(x))
    return clip(offset + contrast * x)


def smooth_field(n: int, rng: np.random.Generator) -> np.ndarray:
    """Noise at three scales (4, 7 and 14 px grids, enlarged linearly), each image in [0, 1]."""
    field = np.zeros((n, IMAGE_SIDE, IMAGE_SIDE), np.float32)
    for cells, weight in ((4, 1.0), (7, 0.6), (14, 0.35)):
        coarse = rng.random((n, cells, cells), dtype=np.float32)
        field += weight * ndimage.zoom(
            coarse, (1, IMAGE_SIDE / cells, IMAGE_SIDE / cells), order=1, grid_mode=True, mode="nearest"
        )
    field -= field.min(axis=(1, 2), keepdims=True)
    return field / np.maximum(field.max(axis=(1, 2), keepdims=True), 1e-6)


def haze(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A smooth uneven veil over the digit, the whole then dimmed by a random share."""
    strength = per_image(rng, HAZE, len(x))
    hazy = x + strength * smooth_field(len(x), rng)
    return clip(hazy / (1 + strength * per_image(rng, (0.3, 1.0), len(x))))


def invert_bands(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bands of random width along one or both edges (columns or rows) turned negative."""
    n = len(x)
    index = np.arange(IMAGE_SIDE)[None, None, :]
    first, last = (rng.integers(*BAND, size=(n, 1, 1)) * (rng.random((n, 1, 1)) < 0.8) for _ in range(2))
    band = (index < first) | (index >= IMAGE_SIDE - last)
    band = np.where(rng.random((n, 1, 1)) < 0.7, band, np.swapaxes(band, 1, 2))
    return np.where(band, 1 - x, x).astype(np.float32)


def segment_ink(a: np.ndarray, b: np.ndarray, width: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A line from a to b ((n, 2) as row, col) per image, ink falling off linearly over `width` px."""
    rows, cols = grid()
    d = (b - a)[:, :, None, None]
    p = np.stack([rows, cols])[None] - a[:, :, None, None]
    t = np.clip((p * d).sum(1) / np.maximum((d * d).sum(1), 1e-6), 0, 1)
    distance = np.sqrt(((p - t[:, None] * d) ** 2).sum(1))
    return np.clip(1 - distance / width, 0, 1), t


def polyline(x: np.ndarray, rng: np.random.Generator, points: np.ndarray) -> np.ndarray:
    """`points` (k, n, 2) joined by lines drawn over the digits, 0.8-2.2 px, solid or dashed."""
    n = len(x)
    width, level = per_image(rng, (0.8, 2.2), n), per_image(rng, (0.5, 1.0), n)
    period = rng.integers(2, 6, size=(n, 1, 1))
    dashed = rng.random((n, 1, 1)) < 0.5
    ink = np.zeros_like(x)
    for a, b in itertools.pairwise(points):
        line, t = segment_ink(a, b, width)
        along = t * np.linalg.norm(b - a, axis=1)[:, None, None]
        gaps = dashed & ((along // period) % 2 == 1)
        ink = np.maximum(ink, np.where(gaps, 0, line))
    return np.maximum(x, level * ink).astype(np.float32)


def scratches(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A line or a jagged line of 2-6 segments between random points, across the digit."""
    points = rng.uniform(-2, IMAGE_SIDE + 1, size=(int(rng.integers(2, 7)), len(x), 2))
    return polyline(x, rng, points.astype(np.float32))


def sawtooth(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Teeth 1-3.5 px high every 1.5-4 px, along a random line across the picture."""
    n = len(x)
    teeth = int(rng.integers(5, 16))
    start = np.stack([rng.uniform(0, IMAGE_SIDE, n), rng.uniform(-2, 6, n)], 1)
    end = np.stack([rng.uniform(0, IMAGE_SIDE, n), rng.uniform(22, 30, n)], 1)
    flip = rng.random(n) < 0.3  # mostly across, sometimes down
    start[flip], end[flip] = start[flip, ::-1], end[flip, ::-1]
    along = np.linspace(0, 1, teeth + 1)[:, None, None]
    direction = end - start
    normal = np.stack([direction[:, 1], -direction[:, 0]], 1) / np.linalg.norm(direction, axis=1)[:, None]
    height = rng.uniform(1, 3.5, (n, 1)) * np.where(np.arange(teeth + 1) % 2, 1, -1)[:, None, None]
    points = start + along * direction + height * normal
    return polyline(x, rng, points.astype(np.float32))


def gaps(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Patches of the strokes lost, as when faint ink or a shadow is taken for paper."""
    keep = smooth_field(len(x), rng) > per_image(rng, (0.15, 0.45), len(x))
    return np.where(keep, x, x * per_image(rng, (0.0, 0.3), len(x))).astype(np.float32)


def ruled(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Parallel faint lines 4-10 px apart, nearly level: ruled paper left behind by the cleaning."""
    n = len(x)
    rows, cols = grid()
    slope, spacing = per_image(rng, (-0.08, 0.08), n), per_image(rng, (4, 10), n)
    phase = (rows + slope * cols + per_image(rng, (0, 10), n)) % spacing
    line = np.clip(1 - np.abs(phase - spacing / 2) / per_image(rng, (0.5, 1.2), n), 0, 1)
    return np.maximum(x, per_image(rng, (0.15, 0.6), n) * line)


def blots(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """1-6 grey ellipses over the digit, opaque: splashes of mud."""
    n = len(x)
    rows, cols = grid()
    out = x.copy()
    for _ in range(int(rng.integers(1, 7))):
        centre = rng.uniform(0, IMAGE_SIDE, size=(2, n, 1, 1))
        radius = rng.uniform(0.8, 3.5, size=(2, n, 1, 1))
        inside = ((rows - centre[0]) / radius[0]) ** 2 + ((cols - centre[1]) / radius[1]) ** 2 <= 1
        inside &= rng.random((n, 1, 1)) < 0.8
        out = np.where(inside, per_image(rng, (0.1, 0.55), n), out)
    return out.astype(np.float32)


# In the order they are applied when an image draws more than one.
AUGMENTATIONS: dict[str, Augmentation] = {
    "thicken": thicken,
    "thin": thin,
    "low_resolution": low_resolution,
    "gaussian_blur": gaussian_blur,
    "streak": streak,
    "jitter": jitter,
    "outline": outline,
    "scratches": scratches,
    "sawtooth": sawtooth,
    "blots": blots,
    "gaps": gaps,
    "ruled": ruled,
    "invert_bands": invert_bands,
    "lighten": lighten,
    "haze": haze,
    "gaussian_noise": gaussian_noise,
    "speckle": speckle,
    "signal_noise": signal_noise,
}


def corrupt(
    x: np.ndarray, rng: np.random.Generator, warped: float = 0.9, counts: tuple[float, ...] = (0.4, 0.4, 0.2)
) -> np.ndarray:
    """A share `warped` of the digits warped by `affine`; then each takes 0, 1, 2, ... of the
    augmentations with probabilities `counts`, distinct ones, applied in AUGMENTATIONS' order."""
    x = x.astype(np.float32, copy=True)
    chosen = rng.random(len(x)) < warped
    if chosen.any():
        x[chosen] = affine(x[chosen], rng)
    how_many = rng.choice(len(counts), size=len(x), p=counts)
    rank = np.argsort(np.argsort(rng.random((len(x), len(AUGMENTATIONS))), axis=1), axis=1)
    for column, augmentation in enumerate(AUGMENTATIONS.values()):
        chosen = rank[:, column] < how_many
        if chosen.any():
            x[chosen] = augmentation(x[chosen], rng)
    return x
