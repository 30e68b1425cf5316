"""The image report's arithmetic: kinds of file, layer origins, the biggest distributions over several
images, and a report that names no folder of the machine it ran on."""

from __future__ import annotations

import argparse
import re
from pathlib import PurePosixPath

import pytest

from bench.image import (
    Layer,
    Measurement,
    command_line,
    kind_of,
    labelled,
    layer_origins,
    render,
    seconds,
    top_distributions,
)


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("numpy/_core/tests/test_umath.py", "test suites"),
        ("numpy/_core/tests/__pycache__/test_umath.cpython-311.pyc", "test suites"),
        ("onnx/backend/test/data/node/test_abs/model.onnx", "test suites"),
        ("numpy/__pycache__/__init__.cpython-311.pyc", "bytecode"),
        ("numpy/_core/include/numpy/ndarraytypes.h", "headers and static libraries"),
        ("numpy/random/lib/libnpyrandom.a", "headers and static libraries"),
        ("uvloop/loop.pyx", "headers and static libraries"),
        ("cv2/cv2.abi3.so", "shared libraries"),
        ("numpy.libs/libscipy_openblas64_-32a4b2a6.so", "shared libraries"),
        ("opencv_python_headless.libs/libavcodec-e863e0e1.so.63.1.102", "shared libraries"),
        ("numpy/testing/__init__.py", "other"),
        ("numpy-2.4.6.dist-info/RECORD", "other"),
    ],
)
def test_each_file_is_of_one_kind(path: str, kind: str) -> None:
    assert kind_of(PurePosixPath(path)) == kind


def test_layers_from_the_base_image_are_told_apart() -> None:
    assert layer_origins(["a", "b", "c"], ["a"]) == ["base image", "this Dockerfile", "this Dockerfile"]


def test_labels_and_values() -> None:
    assert labelled("before=86e8a78") == ("before", "86e8a78")
    assert labelled("serving=mnist-serve:serving") == ("serving", "mnist-serve:serving")
    for bad in ("before", "=HEAD", "after="):
        with pytest.raises(argparse.ArgumentTypeError):
            labelled(bad)


def test_seconds_give_the_median_then_every_run() -> None:
    assert seconds([2.9, 2.31, 2.2]) == "2.31 (2.90, 2.31, 2.20)"
    assert seconds([]) == "-"


def measurement(label: str, distributions: dict[str, int], cold: list[float]) -> Measurement:
    layers = [
        Layer(247_000_000, "base image"),
        Layer(sum(distributions.values()) + 1_000_000, "this Dockerfile"),
    ]
    kinds = {"test suites": 0, "other": sum(distributions.values())}
    found = Measurement(
        label, "mnist-serve:x", "tag", layers, sum(distributions.values()), distributions, kinds
    )
    found.cold_start_seconds = cold
    return found


def test_report_compares_the_images_column_by_column() -> None:
    before = measurement(
        "before",
        {"numpy 2.4.6": 71_400_000, "PyYAML 6.0.4": 3_200_000, "onnx 1.23.2": 26_300_000},
        [1.5, 1.6],
    )
    after = measurement("after", {"numpy 2.4.6": 55_300_000, "onnx 1.23.2": 11_900_000}, [1.4, 1.5, 1.7])
    assert top_distributions([before, after], 2) == ["numpy", "onnx"]
    report = render(
        [before, after], 3, command_line(["--store", "/srv/x/store", "--out=/tmp/r.md"]), "x86_64, 2 cores"
    )
    rows = {line.split(" | ")[0].strip("| "): line for line in report.splitlines() if line.startswith("| ")}
    assert rows["numpy"] == "| numpy | 71.4 (2.4.6) | 55.3 (2.4.6) |"
    assert rows["PyYAML"] == "| PyYAML | 3.2 (6.0.4) | - |"
    assert rows["image (all layers)"] == "| image (all layers) | 348.9 | 315.2 |"
    assert rows["layers (base + this Dockerfile)"].endswith("| 1 + 1 | 1 + 1 |")
    assert "after leaves out (vs before): PyYAML; adds: none" in report
    assert "1.55 (1.50, 1.60) | 1.50 (1.40, 1.50, 1.70)" in rows["cold start: `CMD` to `/readyz` 200"]
    assert "--store store --out=r.md" in report
    assert not re.search(r"(^|[\s`(])/(srv|tmp|work|var|root|home)\b", report), "no machine paths"
