"""The cnn's first layers remove each image's paper and contrast, so such changes cannot reach it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np
import pytest

from model_store.mnist_data import load_split
from model_store.preprocessing import to_model_input
from training.presets import PRESETS, fused_batch_normalization, plain_layers, weight_average_momentum


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


def test_the_paper_removal_keeps_the_strokes_of_bold_digits(mnist_dir: Path) -> None:
    """The paper's level is an opening wider than any stroke; a narrower one eats bold strokes
    (with a 7-pixel window, 162 of the 10,000 test digits lost more than a tenth of their ink, 10 of
    them among the cnn's 47 errors)."""
    preset = PRESETS["cnn"]
    model = preset.build(preset.defaults, 10)
    paper_removed = next(layer for layer in model.layers if isinstance(layer, keras.layers.Subtract))
    strokes = keras.Model(model.inputs, paper_removed.output)
    x = to_model_input(load_split(mnist_dir, "test").images)
    kept = np.concatenate([strokes(x[i : i + 1000]).numpy() for i in range(0, len(x), 1000)])
    lost = 1 - kept.sum(axis=(1, 2, 3)) / x.sum(axis=(1, 2, 3))
    assert np.count_nonzero(lost > 0.1) <= 20, np.sort(lost)[-30:].round(2)


def _conv_net(normalisation: type[keras.layers.BatchNormalization]) -> keras.Model:
    keras.utils.set_random_seed(3)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(8, 3, use_bias=False)(inputs)
    x = normalisation(momentum=0.9)(x)
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
    return model


@pytest.mark.slow  # trains
def test_fused_batch_norm_trains_exactly_as_keras_batch_norm(mnist_dir: Path) -> None:
    test = load_split(mnist_dir, "test")
    x, y = to_model_input(test.images[:64]), np.eye(10, dtype=np.float32)[test.labels[:64]]
    stock, fused = _conv_net(keras.layers.BatchNormalization), _conv_net(fused_batch_normalization())
    fused.set_weights(stock.get_weights())
    stock.train_on_batch(x, y)
    fused.train_on_batch(x, y)
    for before, after in zip(stock.weights, fused.weights, strict=True):
        # Equal but for float32 rounding (sums in another order); the fused kernel's running
        # variance also carries Bessel's n/(n-1), here 1 + 1/43,000.
        np.testing.assert_allclose(after.numpy(), before.numpy(), rtol=1e-3, atol=1e-5, err_msg=before.path)
    untrained = _conv_net(keras.layers.BatchNormalization).get_weights()[0]
    assert not np.allclose(stock.get_weights()[0], untrained)  # the step did move the weights


@pytest.mark.slow  # trains
def test_fused_batch_norm_trains_on_the_fused_kernel() -> None:
    import tensorflow as tf

    layer = fused_batch_normalization()()
    step = tf.function(lambda images: layer(images, training=True))
    graph = step.get_concrete_function(tf.TensorSpec((2, 4, 4, 3))).graph
    assert "FusedBatchNormV3" in {op.type for op in graph.get_operations()}


def test_plain_layers_publishes_stock_keras_layers_with_the_same_answers(mnist_dir: Path) -> None:
    fused = _conv_net(fused_batch_normalization())
    x = to_model_input(load_split(mnist_dir, "test").images[:64])
    fused.train_on_batch(x, np.eye(10, dtype=np.float32)[np.arange(64) % 10])
    published = plain_layers(fused)
    assert {type(layer) for layer in published.layers} <= {
        keras.layers.InputLayer, keras.layers.Conv2D, keras.layers.BatchNormalization,
        keras.layers.Flatten, keras.layers.Dense,
    }  # fmt: skip
    np.testing.assert_array_equal(published.predict(x, verbose=0), fused.predict(x, verbose=0))


class _WeightsAfterEachStep(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.steps: list[list[np.ndarray]] = []

    def on_train_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
        self.steps.append([variable.numpy().copy() for variable in self.model.trainable_variables])


@pytest.mark.slow  # trains
def test_cnn_ends_training_with_the_moving_average_of_its_weights(mnist_dir: Path) -> None:
    """The last step's weights are one noisy point; their average over the last steps generalises
    better (Polyak averaging), and it is what the cnn publishes."""
    preset = PRESETS["cnn"]
    hp = dataclasses.replace(preset.defaults, epochs=1, precision="float32")
    keras.utils.set_random_seed(5)
    train = load_split(mnist_dir, "train")
    x, y = to_model_input(train.images[:1280]), np.eye(10, dtype=np.float32)[train.labels[:1280]]
    model = preset.build(hp, 40)
    seen = _WeightsAfterEachStep()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[seen])

    assert len(seen.steps) == 40
    momentum = weight_average_momentum(hp, 40)
    assert momentum == 1 - 1 / 8  # a short run averages over its last fifth
    average = seen.steps[0]  # Keras starts the average at the first step's weights
    for step in seen.steps[1:]:
        average = [momentum * mean + (1 - momentum) * now for mean, now in zip(average, step, strict=True)]
    for variable, expected, last in zip(model.trainable_variables, average, seen.steps[-1], strict=True):
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-4, atol=1e-6)
        assert not np.allclose(variable.numpy(), last, rtol=1e-4, atol=1e-6), variable.path


def test_the_weight_average_spans_the_last_thousand_steps_of_a_full_run_and_a_fifth_of_a_short_one() -> None:
    cnn, seed = PRESETS["cnn"].defaults, PRESETS["seed"].defaults
    full_run = cnn.epochs * -(-55_000 // cnn.batch_size)
    assert weight_average_momentum(cnn, full_run) == cnn.weight_average == 0.999
    assert weight_average_momentum(cnn, 500) == 1 - 1 / 100
    assert weight_average_momentum(cnn, 5) == 0.0  # the last step's weights
    assert seed.weight_average == 0.0  # the notebook's network as the notebook trained it
