"""What the front page says the default path builds, in one place: the README's tables take the
default model's numbers at this precision, and `tests/test_default_model.py` checks that every
default training path (scripts/serve.sh, compose's `train`, the Kubernetes training Job, a plain
`mnist-train`) publishes a version that `/model` reports serving at it.

float32: the int8 export is written at every publish, but serving's `auto` runs it only after the
proof that needs `--robustness`, which the default paths leave out: it adds two robustness
benchmarks (float32's and int8's) to every training (docs/training.md, "Serving in int8").
"""

from __future__ import annotations

from typing import Literal

DEFAULT_PRESET = "cnn"
DEFAULT_SERVED_PRECISION: Literal["float32", "int8"] = "float32"
