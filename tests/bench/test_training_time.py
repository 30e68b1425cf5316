"""`python -m bench.training_time`: what each kind measures, checked without training."""

from __future__ import annotations

import pytest

from bench.training_time import DEFAULT_KINDS, KINDS, main
from training.precision import choose_precision

AVX512_BF16_CPU = frozenset({"avx2", "avx512f", "avx512_bf16"})


def test_each_kind_is_what_auto_would_train_in_under_its_environment() -> None:
    # bfloat16 and float32 are auto's choices on the two kinds of CPU; the emulated kind is the
    # bfloat16 auto avoids, on TensorFlow's own kernels.
    for kind in ("bfloat16", "float32"):
        precision, environment = KINDS[kind]
        assert choose_precision(AVX512_BF16_CPU, environment).precision == precision
    precision, environment = KINDS["bfloat16_emulated"]
    assert precision == "mixed_bfloat16"
    assert choose_precision(AVX512_BF16_CPU, environment).precision == "float32"
    assert set(DEFAULT_KINDS) == {"bfloat16", "float32", "bfloat16_emulated"}


def test_an_unknown_kind_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--kinds", "float32,float64"])
    assert str(stopped.value) == (
        "python -m bench.training_time: error: unknown kind float64; choose from "
        "bfloat16, float32, bfloat16_emulated, float32_native"
    )


def test_the_fine_tune_case_mixes_in_typeset_corrections_as_training_does() -> None:
    import numpy as np

    from bench.training_time import typeset_corrections
    from training.feedback import split

    corrections = typeset_corrections(50)
    assert corrections.images.shape == (50, 28, 28) and corrections.images.dtype == np.uint8
    assert sorted(set(corrections.labels.tolist())) == list(range(10))
    trained, held = split(corrections)
    assert len(trained.labels) + len(held.labels) == 50 and len(held.labels) > 0
