"""The cnn's first layers remove each image's paper and contrast, so such changes cannot reach it."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from model_store.mnist_data import load_split
from model_store.preprocessing import to_model_input
from training.presets import PRESETS


def test_cnn_sees_a_grey_background_and_faint_ink_as_the_plain_digit(mnist_dir: Path) -> None:
    preset = PRESETS["cnn"]
    model = preset.build(preset.defaults, 10)  # untrained: this holds for any weights
    normalised = next(layer for layer in model.layers if isinstance(layer, keras.layers.LayerNormalization))
    seen = keras.Model(model.inputs, normalised.output)
    x = to_model_input(load_split(mnist_dir, "test").images[:32])
    washed_out = 0.3 + 0.5 * x  # MNIST-C's brightness, at half the contrast
    plain, grey = (seen(batch).numpy() for batch in (x, washed_out))
    # Equal but for the normalisation's epsilon, which weighs 4 times more at half the contrast.
    np.testing.assert_allclose(grey, plain, rtol=0.05, atol=1e-3)
    assert np.abs(plain).max() > 1  # standardised, not flattened
