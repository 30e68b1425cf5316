"""`python -m training.onnx_export VERSION`: the ONNX export of a version's forward pass, written
at publish time (`mnist-train`) or later into a version published without one.

The export is `model_store.forward.forward_function` converted by tf2onnx, checked against Keras
on ONNX Runtime before it is kept, with the SHA-256 of the `model.keras` it came from, so the
service never runs it for other weights. Training also measures the export it publishes (the gate,
the int8 proof) through `onnx_forward`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from model_store.forward import (
    INPUT_NAME,
    ONNX_FILE,
    OUTPUTS,
    ForwardOutputs,
    NumpyForward,
    OnnxExport,
    file_sha256,
    forward_function,
)
from model_store.metadata import MODEL_FILE, ModelMetadata
from model_store.reporting import load_settings, one_line_errors
from model_store.settings import StoreSettings, add_store_arguments
from model_store.store import ModelStore, ModelStoreError

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

PROG = "python -m training.onnx_export"
ONNX_OPSET = 17
# Probabilities of the export may differ from Keras' by float32 rounding only (fused kernels sum in
# another order); anything larger means the conversion changed the network.
ONNX_TOLERANCE = 1e-5
CHECK_IMAGES = 64


def onnx_forward(content: bytes) -> NumpyForward:
    """An ONNX Runtime session on an export, called with and returning numpy arrays: how training
    measures what the service will run."""
    import onnxruntime

    session = onnxruntime.InferenceSession(content, providers=["CPUExecutionProvider"])

    def run(batch: np.ndarray) -> ForwardOutputs:
        probabilities, logits, features = session.run(OUTPUTS, {INPUT_NAME: batch})
        return probabilities, logits, features

    return run


def onnx_bytes(model: keras.Model, input_shape: tuple[int, ...]) -> bytes:
    """The forward pass as an ONNX model with input `images` and outputs named as in OUTPUTS."""
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.WARNING)  # a dozen INFO lines per conversion
    forward = forward_function(model, input_shape)
    proto, _ = tf2onnx.convert.from_function(
        forward, input_signature=forward.input_signature, opset=ONNX_OPSET
    )
    return bytes(proto.SerializeToString())


def check_images(input_shape: tuple[int, ...], count: int = CHECK_IMAGES) -> np.ndarray:
    """Fixed inputs for comparing an export with Keras: blank, full and random-valued images."""
    rng = np.random.default_rng(0)
    images = rng.random((count, *input_shape), dtype=np.float32)
    images[0], images[1] = 0.0, 1.0
    return images


def export_onnx(model: keras.Model, model_file: Path, input_shape: tuple[int, ...]) -> OnnxExport:
    """Write `model.onnx` beside `model_file` (the model.keras `model` was loaded from) and check
    that it gives Keras' probabilities. Raises ValueError if it does not."""
    import tf2onnx

    content = onnx_bytes(model, input_shape)
    images = check_images(input_shape)
    expected = np.asarray(model(images, training=False))
    difference = float(np.abs(onnx_forward(content)(images)[0] - expected).max())
    if not difference <= ONNX_TOLERANCE:
        raise ValueError(f"the ONNX export differs from Keras by {difference:.2g} in probability")
    # Renamed into place: a version being served may get its export later (this module's command).
    staging = model_file.parent / f".tmp-{ONNX_FILE}"
    staging.write_bytes(content)
    os.replace(staging, model_file.parent / ONNX_FILE)
    return OnnxExport(
        model_sha256=file_sha256(model_file),
        converter=f"tf2onnx {tf2onnx.__version__}, opset {ONNX_OPSET}",
        max_abs_difference=difference,
    )


def with_onnx_export(folder: Path, metadata: ModelMetadata) -> ModelMetadata:
    """Write the ONNX export of the folder's model.keras unless the folder already holds the one
    made from these very weights (a copied version). Serving falls back to TensorFlow without it, so
    a failed export is logged, not fatal."""
    model_file, export_file = folder / MODEL_FILE, folder / ONNX_FILE
    if not model_file.is_file():
        return metadata
    current = metadata.onnx
    if current is not None and export_file.is_file() and current.model_sha256 == file_sha256(model_file):
        return metadata
    export_file.unlink(missing_ok=True)  # a copy made from other weights must never be served
    files = {role: name for role, name in metadata.files.items() if role != "onnx"}
    try:
        import keras

        model = keras.saving.load_model(model_file, compile=False)
        onnx = export_onnx(model, model_file, tuple(metadata.input.shape))
    except Exception as exc:  # a damaged model, an op the converter lacks, tf2onnx missing
        log.warning("%s: no ONNX export, serving will use TensorFlow: %s", model_file, exc)
        return metadata.model_copy(update={"files": files, "onnx": None})
    return metadata.model_copy(update={"files": files | {"onnx": ONNX_FILE}, "onnx": onnx})


def export_version(store: ModelStore, version: int) -> ModelMetadata:
    """Give a published version (one from before the export existed) its model.onnx, in place:
    the file first, then the metadata naming it, so a reader never finds the one without the other."""
    metadata = store.read_metadata(version)
    updated = with_onnx_export(store.version_path(version), metadata)
    if updated.onnx is None:
        raise ModelStoreError(f"{store.version_path(version) / MODEL_FILE}: the ONNX export failed")
    if updated != metadata:
        store.update_metadata(updated)
    return updated


def main(argv: list[str] | None = None) -> int:
    settings = load_settings(PROG, StoreSettings)
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    add_store_arguments(parser, settings)
    parser.add_argument("version", help="the version to give a model.onnx")
    args = parser.parse_args(argv)
    with one_line_errors(PROG):
        store = ModelStore(args.store, args.name, settings.model_cache_dir)
        version = store.resolve(args.version)
        onnx = export_version(store, version).onnx
        sys.stdout.write(f"{store.describe(version)}: {onnx}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
