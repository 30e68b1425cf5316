"""The baseline: a Keras model turned into a service the obvious way, `model.predict` per request.

MNIST_MODEL_STORE=... uvicorn bench.naive_app:app
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import keras
import numpy as np
from fastapi import FastAPI, UploadFile
from PIL import Image

from model_store.store import ModelStore

store = ModelStore(Path(os.environ["MNIST_MODEL_STORE"]))
version = store.resolve(os.environ.get("MNIST_MODEL_VERSION") or None)
model = keras.saving.load_model(store.version_path(version) / "model.keras", compile=False)
app = FastAPI()


@app.post("/predict")
def predict(file: UploadFile) -> dict[str, object]:
    pixels = np.asarray(Image.open(io.BytesIO(file.file.read())).convert("L"), dtype=np.float32) / 255
    probabilities = model.predict(pixels.reshape(1, 28, 28, 1), verbose=0)[0]
    return {"prediction": int(probabilities.argmax()), "probabilities": probabilities.tolist()}


@app.get("/readyz")
def ready() -> dict[str, str]:
    return {"status": "ready"}
