"""The drift reference a version is published with: held-out digits' pooled ink, and a threshold.

Half of the held-out digits make the reference; the threshold is the `FALSE_ALARM_QUANTILE` of the
statistic over random windows drawn from the other half, so an in-distribution window crosses it
about once in a hundred (`python -m bench.drift` measures that rate on the MNIST test digits).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from model_store.drift import DRIFT_REFERENCE_FILE, DRIFT_REFERENCE_ROLE, DriftReference, pooled

WINDOW = 200  # digits per window: chosen with bench.drift (docs/drift.md)
FALSE_ALARM_QUANTILE = 0.99
CALIBRATION_WINDOWS = 2000

log = logging.getLogger("training")


def calibrate(
    digits: np.ndarray,
    seed: int,
    window: int = WINDOW,
    quantile: float = FALSE_ALARM_QUANTILE,
    windows: int = CALIBRATION_WINDOWS,
) -> DriftReference:
    """A reference of half of `digits`, its threshold calibrated on windows of the other half."""
    if len(digits) < 4 * window:
        raise ValueError(
            f"{len(digits)} held-out digits cannot calibrate windows of {window}: need {4 * window}"
        )
    rng = np.random.default_rng(seed)
    shuffled = digits[rng.permutation(len(digits))]
    half = len(shuffled) // 2
    reference = DriftReference.of(shuffled[:half], window, quantile)
    calibration = pooled(shuffled[half:])
    statistics = [
        reference.statistic_of(calibration[rng.choice(len(calibration), window, replace=False)])
        for _ in range(windows)
    ]
    return DriftReference(**{**vars(reference), "threshold": float(np.quantile(statistics, quantile))})


def write_drift_reference(folder: Path, held_out: np.ndarray, seed: int) -> dict[str, str]:
    """Calibrate on the held-out digits and write the reference into `folder`; its `files` role.
    Too few held-out digits (a small --holdout) publish no reference: the version reports no drift."""
    if len(held_out) < 4 * WINDOW:
        log.warning(f"no drift reference: {len(held_out)} held-out digits, {4 * WINDOW} needed")
        return {}
    calibrate(held_out, seed).save(folder / DRIFT_REFERENCE_FILE)
    return {DRIFT_REFERENCE_ROLE: DRIFT_REFERENCE_FILE}
