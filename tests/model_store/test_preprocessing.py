"""`to_model_input`: the one place pixels are reshaped, scaled and (if asked) inverted."""

from __future__ import annotations

import numpy as np
import pytest

from model_store.preprocessing import DEFAULT_INPUT_SPEC, INPUT_SHAPE, InputSpec, to_model_input


def gradient_images(n: int = 3) -> np.ndarray:
    """n distinct uint8 images covering 0..255."""
    base = (np.arange(28 * 28) % 256).astype(np.uint8).reshape(28, 28)
    return np.stack([np.roll(base, i) for i in range(n)])


@pytest.mark.parametrize("shape", [(3, 28, 28), (3, 28, 28, 1)])
def test_to_model_input_gives_n_28_28_1_float32(shape: tuple[int, ...]) -> None:
    images = gradient_images(3).reshape(shape)
    batch = to_model_input(images)
    assert batch.shape == (3, *INPUT_SHAPE) == (3, 28, 28, 1)
    assert batch.dtype == np.float32


def test_to_model_input_scales_to_unit_range_with_255_as_one() -> None:
    images = gradient_images(2)
    batch = to_model_input(images)
    assert float(batch.min()) == 0.0
    assert float(batch.max()) == 1.0
    assert batch[images.reshape(batch.shape) == 255].tolist() == [1.0] * int((images == 255).sum())
    np.testing.assert_allclose(batch[..., 0], images / 255.0, rtol=1e-6)


def test_to_model_input_keeps_mnist_polarity_by_default() -> None:
    assert DEFAULT_INPUT_SPEC.polarity == "light_on_dark"
    images = np.zeros((1, 28, 28), dtype=np.uint8)
    images[0, 10:18, 13:15] = 255  # a bright stroke on a dark field
    batch = to_model_input(images)
    assert batch[0, 0, 0, 0] == 0.0
    assert batch[0, 12, 13, 0] == 1.0


def test_to_model_input_inverts_for_dark_on_light_spec() -> None:
    spec = InputSpec(polarity="dark_on_light")
    images = gradient_images(2)
    batch = to_model_input(images, spec)
    np.testing.assert_allclose(batch[..., 0], (255 - images.astype(np.float64)) / 255.0, rtol=1e-6)
    assert batch.dtype == np.float32
    assert batch[images.reshape(batch.shape) == 0].min() == 1.0
    assert batch[images.reshape(batch.shape) == 255].max() == 0.0


def test_to_model_input_does_not_modify_its_argument() -> None:
    images = gradient_images(2)
    original = images.copy()
    to_model_input(images, InputSpec(polarity="dark_on_light"))
    assert np.array_equal(images, original)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint16, np.int8])
def test_to_model_input_refuses_non_uint8_pixels(dtype: type) -> None:
    images: np.ndarray = gradient_images(1).astype(dtype)
    with pytest.raises(TypeError, match="uint8"):
        to_model_input(images)


@pytest.mark.parametrize(
    "shape",
    [
        (2, 27, 27),
        (4, 14, 14),  # 784 pixels in all: a reshape alone would pass it as one image
        (784,),
        (1, 784),
        (28, 28),
        (2, 28, 28, 3),
        (1, 1, 28, 28),
    ],
)
def test_to_model_input_refuses_anything_but_n_28_28(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="28"):
        to_model_input(np.zeros(shape, dtype=np.uint8))
