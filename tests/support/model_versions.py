"""Versions built from a store's version without training: the same network answering with its
labels permuted, published straight into the store as a version that passed its gate.

A permuted version is what a candidate that passed an offline proof but fails live looks like:
its metadata still reports the source's test accuracy, while every answer it gives moves each
digit to another label. The permutation is applied to the ONNX export, which is what the service
serves (ONNX Runtime, float32): a Gather on the classes of the logits and of the probabilities,
the same as permuting the output layer's units.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from model_store.metadata import METADATA_FILE, ModelMetadata
from model_store.store import ModelStore

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
PERMUTED_OUTPUTS = ("logits", "probabilities")


def permuted_onnx(source: Path, permutation: list[int]) -> bytes:
    """The ONNX model at `source` answering class `permutation[k]`'s score as class k's."""
    model = onnx.load(source)
    graph = model.graph
    for node in graph.node:
        node.input[:] = [f"{name}_unpermuted" if name in PERMUTED_OUTPUTS else name for name in node.input]
        node.output[:] = [f"{name}_unpermuted" if name in PERMUTED_OUTPUTS else name for name in node.output]
    graph.initializer.append(numpy_helper.from_array(np.array(permutation, dtype=np.int64), "permutation"))
    for name in PERMUTED_OUTPUTS:
        graph.node.append(helper.make_node("Gather", [f"{name}_unpermuted", "permutation"], [name], axis=1))
    onnx.checker.check_model(model)
    return model.SerializeToString()


def publish_permuted(
    store_root: Path, permutation: list[int], source_version: int = 1, source_root: Path | None = None
) -> int:
    """Publish version `source_version` (of the store at `source_root`, default the same) with its
    labels permuted (float32 ONNX only: the int8 export is left out, as a publication whose int8
    proof failed leaves it); the new version."""
    store = ModelStore(store_root)
    source_store = ModelStore(source_root) if source_root is not None else store
    source = source_store.version_path(source_version)
    metadata = source_store.read_metadata(source_version)

    def write(folder: Path, version: int) -> ModelMetadata:
        for item in source.iterdir():
            if item.is_file() and item.name not in (METADATA_FILE, ONNX_FILE, INT8_FILE):
                shutil.copy2(item, folder / item.name)
        (folder / ONNX_FILE).write_bytes(permuted_onnx(source / ONNX_FILE, permutation))
        files = {role: name for role, name in metadata.files.items() if name != INT8_FILE}
        return metadata.model_copy(update={"version": version, "files": files, "int8": None})

    return store.publish(write)


SHUFFLED = [3, 4, 5, 6, 7, 8, 9, 0, 1, 2]  # no digit keeps its label: every answer is wrong
HALF_SWAPPED = [1, 0, 3, 2, 5, 4, 6, 7, 8, 9]  # 0-5 swapped in pairs: about 40 % right
