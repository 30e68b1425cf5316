"""Publish a model built outside `training/` into a store that mnist-serve serves.

    python docs/examples/own_model.py --store my-models --data-dir data/mnist

A small Keras network (784-64-10) trained for three epochs on 6,000 MNIST training digits, scored on
the 10,000 test digits, and written as a new version: `model.keras`, `model.onnx` (which the service runs)
and `metadata.json`. No `trust` section: its verdicts stay uncalibrated.
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np

from model_store.metadata import Evaluation, ModelMetadata, TrainingRecord
from model_store.mnist_data import MNIST_FILES, load_split
from model_store.preprocessing import DEFAULT_INPUT_SPEC, to_model_input
from model_store.store import ModelStore
from training.onnx_export import with_onnx_export

TRAIN_IMAGES = 6000
EPOCHS = 3


def build() -> keras.Model:
    # The service reads the features from the last layer's input: end with a dense softmax.
    return keras.Sequential(
        [
            keras.Input(DEFAULT_INPUT_SPEC.shape),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    args = parser.parse_args()

    # Prepare the data: MNIST's own pixels, scaled the way serving scales them.
    train, test = load_split(args.data_dir, "train"), load_split(args.data_dir, "test")
    x_train = to_model_input(train.images[:TRAIN_IMAGES])
    y_train = keras.utils.to_categorical(train.labels[:TRAIN_IMAGES], 10)

    # Build and train.
    model = build()
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    started = time.perf_counter()
    history = model.fit(x_train, y_train, batch_size=128, epochs=EPOCHS, verbose=0)
    train_seconds = time.perf_counter() - started

    # Evaluate on the whole test split.
    started = time.perf_counter()
    predicted = model.predict(to_model_input(test.images), verbose=0).argmax(axis=1)
    evaluate_seconds = time.perf_counter() - started
    confusion = np.zeros((10, 10), dtype=int)
    np.add.at(confusion, (test.labels, predicted), 1)
    correct = int(np.trace(confusion))

    def write(folder: Path, version: int) -> ModelMetadata:
        """Fill the version folder (the model, its ONNX export); the store moves it into place."""
        model.save(folder / "model.keras")
        metadata = ModelMetadata(
            name="mnist",
            version=version,
            created_at=datetime.now(UTC),
            input=DEFAULT_INPUT_SPEC,
            evaluation=Evaluation(
                accuracy=correct / len(test.labels),
                correct=correct,
                total=len(test.labels),
                per_class_accuracy=(confusion.diagonal() / confusion.sum(axis=1)).tolist(),
                confusion_matrix=confusion.tolist(),
            ),
            training=TrainingRecord(
                preset="own-dense-64",
                hyperparameters={"epochs": EPOCHS, "batch_size": 128, "optimizer": "adam"},
                history={name: [float(v) for v in values] for name, values in history.history.items()},
                train_samples=TRAIN_IMAGES,
                validation_samples=0,
                train_seconds=train_seconds,
                evaluate_seconds=evaluate_seconds,
                data_sha256={spec.name: spec.sha256 for spec in MNIST_FILES.values()},
            ),
            library_versions={"python": platform.python_version(), "keras": keras.__version__},
            files={"model": "model.keras"},
        )
        return with_onnx_export(folder, metadata)

    version = ModelStore(args.store, "mnist").publish(write)
    print(f"published version {version}: {correct} / {len(test.labels)} test digits")


if __name__ == "__main__":
    main()
