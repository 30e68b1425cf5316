"""A version's network answering with its labels permuted, without training: what
`tests.app.conftest.publish_permuted` publishes.

A permuted version is what a candidate that passed an offline proof but fails live looks like:
its metadata still reports the source's test accuracy, while every answer it gives moves each
digit to another label. The permutation is applied to the ONNX export, which is what the service
serves (ONNX Runtime, float32): a Gather on the classes of the logits and of the probabilities,
the same as permuting the output layer's units.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

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


SHUFFLED = [3, 4, 5, 6, 7, 8, 9, 0, 1, 2]  # no digit keeps its label: every answer is wrong
HALF_SWAPPED = [1, 0, 3, 2, 5, 4, 6, 7, 8, 9]  # 0-5 swapped in pairs: about 40 % right
