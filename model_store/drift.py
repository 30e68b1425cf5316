"""Input drift: whether the digits a version is shown still look like the digits it was trained on.

At publish time `training/drift_reference.py` keeps, in the version's `drift_reference.npz`, the
per-feature mean and variance of held-out MNIST digits and a threshold calibrated on other held-out
digits; the service keeps a window of the last digits each version answered and compares the two
with `DriftReference.statistic`, so both sides measure with the same code.

The statistic (chosen by `python -m bench.drift`, see docs/drift.md): each digit is pooled to 7x7
mean ink, and the window's mean of each of the 49 features is compared with the reference's as a
z-score, `(window mean - reference mean) / (reference sd / sqrt(window))`; the statistic is the mean
squared z-score. In distribution it is about 1 whatever the window; uploads, MNIST-C's corruptions and
non-digits move it by tens to thousands. It costs about a millisecond for a window of 200 digits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_store.preprocessing import IMAGE_SIDE

DRIFT_REFERENCE_FILE = "drift_reference.npz"
DRIFT_REFERENCE_ROLE = "drift_reference"  # its role in the metadata's `files`
DRIFT_METHOD = "mean_shift_7x7"
# 28x28 pooled 4x4 -> 7x7: coarse enough to ignore a stroke's exact path, fine enough to see where ink is.
POOL = 4
# Keeps a pixel that is never inked in the reference (a corner) from dividing by zero; in units of
# pooled ink squared, far below any real feature's variance.
VARIANCE_FLOOR = 1e-4


class DriftReferenceError(ValueError):
    """A version's drift reference cannot be read; the message says which file and why."""


def pooled(images: np.ndarray) -> np.ndarray:
    """uint8 digits (N, 28, 28) -> float32 (N, 49): the mean ink of each 4x4 block, in [0, 1]."""
    side = IMAGE_SIDE // POOL
    blocks = images.reshape(len(images), side, POOL, side, POOL).astype(np.float32)
    return blocks.mean(axis=(2, 4)).reshape(len(images), side * side) / 255.0


@dataclass(frozen=True)
class DriftReference:
    """What a version's inputs looked like at publish time, and when a window of them has drifted."""

    mean: np.ndarray  # (49,) pooled features' mean over the reference digits
    variance: np.ndarray  # (49,) their variance
    threshold: float  # the statistic's false_alarm_quantile over in-distribution windows
    window: int  # digits per window the threshold was calibrated for
    false_alarm_quantile: float
    reference_images: int
    method: str = DRIFT_METHOD

    @classmethod
    def of(cls, images: np.ndarray, window: int, false_alarm_quantile: float) -> DriftReference:
        """A reference of `images` whose threshold is still to be calibrated (infinite until then)."""
        features = pooled(images)
        return cls(
            mean=features.mean(axis=0),
            variance=np.maximum(features.var(axis=0), VARIANCE_FLOOR),
            threshold=float("inf"),
            window=window,
            false_alarm_quantile=false_alarm_quantile,
            reference_images=len(images),
        )

    def statistic(self, images: np.ndarray) -> float:
        """The mean squared z-score of the window's pooled means against the reference's."""
        return self.statistic_of(pooled(images))

    def statistic_of(self, features: np.ndarray) -> float:
        """The statistic of a window already pooled (N, 49): calibration pools its digits once."""
        shift = features.mean(axis=0) - self.mean
        return float(np.mean(shift * shift * len(features) / self.variance))

    def drifting(self, statistic: float) -> bool:
        return statistic > self.threshold

    def save(self, path: Path) -> None:
        np.savez(
            path,
            mean=self.mean.astype(np.float32),
            variance=self.variance.astype(np.float32),
            threshold=np.float64(self.threshold),
            window=np.int64(self.window),
            false_alarm_quantile=np.float64(self.false_alarm_quantile),
            reference_images=np.int64(self.reference_images),
            method=np.str_(self.method),
        )

    @classmethod
    def load(cls, path: Path) -> DriftReference:
        """The reference in `path`; DriftReferenceError if it is damaged or made for another method."""
        features = (IMAGE_SIDE // POOL) ** 2
        try:
            with np.load(path, allow_pickle=False) as data:
                reference = cls(
                    mean=data["mean"].astype(np.float32),
                    variance=data["variance"].astype(np.float32),
                    threshold=float(data["threshold"]),
                    window=int(data["window"]),
                    false_alarm_quantile=float(data["false_alarm_quantile"]),
                    reference_images=int(data["reference_images"]),
                    method=str(data["method"]),
                )
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise DriftReferenceError(f"{path}: cannot read the drift reference: {exc}") from exc
        if reference.method != DRIFT_METHOD:
            raise DriftReferenceError(
                f"{path}: method {reference.method!r}, this code measures {DRIFT_METHOD!r}"
            )
        shapes_ok = reference.mean.shape == reference.variance.shape == (features,)
        if not shapes_ok or reference.window < 2 or not np.isfinite(reference.threshold):
            raise DriftReferenceError(f"{path}: not a calibrated reference of {features} features")
        return reference


def read_drift_reference(folder: Path, files: dict[str, str]) -> DriftReference | None:
    """The reference a version's metadata lists in `files`; None for a version published without one."""
    name = files.get(DRIFT_REFERENCE_ROLE)
    if name is None:
        return None
    return DriftReference.load(folder / name)
