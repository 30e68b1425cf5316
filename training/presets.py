"""The networks we train, each with the hyperparameters it was tuned with."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

from model_store.metadata import TrainingDtype
from model_store.preprocessing import INPUT_SHAPE, NUM_CLASSES

if TYPE_CHECKING:
    # Imported where a network is built: choosing a preset or reading --help must not load TensorFlow.
    import keras


Precision = Literal["auto", TrainingDtype]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
# Mixed bfloat16 where the training CPU computes bfloat16 natively, else float32 (`training.precision`).
AUTO: Precision = "auto"


@dataclass(frozen=True)
class Hyperparameters:
    epochs: int
    batch_size: int
    learning_rate: float
    # Training images set aside before anything else (seeded), never trained on: validation curves,
    # then calibration and the trust thresholds at publish time.
    holdout: int = 5000
    seed: int = 42
    # Share of the training digits corrupted afresh in every batch (`training.augment`), and
    # outliers added to every batch with a uniform target (`training.outliers`); 0 for neither.
    corrupted: float = 0.0
    outliers: int = 0
    # Keras dtype policy while training, or `auto`. Under mixed_bfloat16 the layers compute in
    # bfloat16 and keep float32 weights; the published model computes in float32 (`plain_layers`).
    precision: Precision = "float32"
    # Momentum of the moving average of the weights kept while training and published in place of
    # the last step's (Polyak averaging); 0 publishes the last step's.
    weight_average: float = 0.0


@dataclass(frozen=True)
class Preset:
    description: str
    defaults: Hyperparameters
    build: Callable[[Hyperparameters, int], keras.Model]  # (hyperparameters, steps per epoch)


def build_seed(hp: Hyperparameters, steps_per_epoch: int) -> keras.Model:
    """The classic dense Keras MNIST example: 784 -> Dense 1000 relu -> Dense 10 softmax, plain SGD."""
    import keras
    from keras import layers

    model = keras.Sequential(
        [
            keras.Input(INPUT_SHAPE),
            layers.Flatten(),
            layers.Dense(1000, activation="relu"),
            layers.Dense(NUM_CLASSES, activation="softmax"),
        ],
        name="seed_dense",
    )
    model.compile(
        optimizer=keras.optimizers.SGD(hp.learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


# Keras' default of 0.99 leaves the moving statistics unsettled after a few hundred steps, so a
# short run would serve badly; 0.9 settles within a hundred.
BN_MOMENTUM = 0.9
# px: wider than any stroke, or the paper removal eats bold digits' strokes (docs/performance.md).
PAPER_WINDOW = 9


@functools.cache
def fused_batch_normalization() -> type[keras.layers.BatchNormalization]:
    """Keras' BatchNormalization, training on TensorFlow's fused kernel.

    Keras 3 normalises a batch with separate moment, subtract, scale and add ops (and as many in the
    gradient), a large share of the `cnn`'s training step (docs/performance.md);
    `tf.nn.fused_batch_norm` does the same in one op each way. The layer has the same weights, and
    outside training the same call, so `plain_layers` can publish it as the stock layer any Keras
    or TF Serving reads."""
    import keras
    import tensorflow as tf

    class FusedBatchNormalization(keras.layers.BatchNormalization):
        def call(self, inputs, training=None, mask=None):  # type: ignore[no-untyped-def]
            fusable = len(inputs.shape) == 4 and self.axis in (-1, 3) and self.center and self.scale
            if not (training and self.trainable and fusable and mask is None):
                return super().call(inputs, training=training, mask=mask)
            outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, self.gamma, self.beta, epsilon=self.epsilon, is_training=True
            )
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1 - self.momentum))
            return outputs

    return FusedBatchNormalization


def plain_layers(model: keras.Model) -> keras.Model:
    """The trained model with stock Keras layers computing in float32 (same weights), so that the
    published `model.keras` loads without this package and every runtime computes as Keras does."""
    import keras

    def stock(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config() | {"dtype": "float32"}
        if isinstance(layer, keras.layers.BatchNormalization):
            return keras.layers.BatchNormalization.from_config(config)
        return layer.__class__.from_config(config)

    published = keras.models.clone_model(model, clone_function=stock)
    published.set_weights(model.get_weights())
    return published


def _conv_block(x: keras.KerasTensor, filters: int) -> keras.KerasTensor:
    from keras import layers

    for _ in range(2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = fused_batch_normalization()(momentum=BN_MOMENTUM)(x)
        x = layers.ReLU()(x)
    return layers.MaxPooling2D()(x)


def per_image_normalisation(x: keras.KerasTensor) -> keras.KerasTensor:
    """Each image's paper removed and its contrast standardised, inside the saved model, so that a
    grey, fogged or striped background and faint ink reach the convolutions as MNIST's black and
    white do, whoever serves the model."""
    from keras import layers

    # The paper's level is a grey opening (erosion, then dilation) wider than any stroke: what is
    # left after subtracting it is the strokes. -maxpool(-x) is the erosion.
    # In float32 whatever the policy: cheap, and bfloat16's 8-bit mantissa would round the pixels.
    exact = {"dtype": "float32"}
    eroded = layers.Rescaling(-1, **exact)(
        layers.MaxPooling2D(PAPER_WINDOW, 1, "same", **exact)(layers.Rescaling(-1, **exact)(x))
    )
    paper = layers.MaxPooling2D(PAPER_WINDOW, 1, "same", **exact)(eroded)
    strokes = layers.Subtract(**exact)([x, paper])
    standardise = layers.LayerNormalization(axis=(1, 2, 3), center=False, scale=False, epsilon=1e-3, **exact)
    return standardise(strokes)


# The weights' average spans at most this share of a run's steps: a longer one would keep the early,
# poor weights in it (Keras starts it at the first step's weights), and a short run would publish them.
AVERAGED_SHARE = 0.2


def weight_average_momentum(hp: Hyperparameters, total_steps: int) -> float:
    """`hp.weight_average`, lowered when its span (1 / (1 - momentum) steps) would cover more than
    AVERAGED_SHARE of the run."""
    return max(0.0, min(hp.weight_average, 1 - 1 / (AVERAGED_SHARE * total_steps)))


def build_cnn(hp: Hyperparameters, steps_per_epoch: int) -> keras.Model:
    """Two conv blocks with batch norm behind a per-image normalisation; the corrupted batches and
    outliers are `training.batches`' (hyperparameters `corrupted`, `outliers`)."""
    import keras
    from keras import layers

    inputs = keras.Input(INPUT_SHAPE)
    x = per_image_normalisation(inputs)
    x = _conv_block(x, 32)
    x = _conv_block(x, 64)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.3)(x)
    x = layers.Dense(128, use_bias=False)(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
    x = layers.ReLU()(x)
    x = layers.Dropout(0.3)(x)
    # Probabilities in float32 whatever the policy: the loss of a confident answer needs the digits.
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32")(x)
    model = keras.Model(inputs, outputs, name="cnn")

    # Warm up for a tenth of training, then cosine decay to zero.
    total_steps = max(1, hp.epochs * steps_per_epoch)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=hp.learning_rate / 10,
        decay_steps=total_steps,
        warmup_target=hp.learning_rate,
        warmup_steps=total_steps // 10,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(
            schedule, use_ema=hp.weight_average > 0, ema_momentum=weight_average_momentum(hp, total_steps)
        ),
        # Targets are distributions: one-hot for digits, uniform for outliers.
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


PRESETS: dict[str, Preset] = {
    "seed": Preset(
        "the classic dense Keras MNIST example (784-1000-10, SGD), 50 epochs",
        Hyperparameters(epochs=50, batch_size=100, learning_rate=0.01),
        build_seed,
    ),
    "cnn": Preset(
        "convolutional net with augmentation and a cosine learning-rate schedule",
        Hyperparameters(
            epochs=18,
            batch_size=128,
            learning_rate=3e-3,
            corrupted=0.5,
            outliers=16,
            # bfloat16 where the CPU has it natively: emulated, it is several times slower.
            precision=AUTO,
            # Over about the last 1,000 steps: level with or above the last step's weights on clean
            # test digits (docs/performance.md).
            weight_average=0.999,
        ),
        build_cnn,
    ),
}
