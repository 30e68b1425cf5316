"""`--precision auto`: mixed bfloat16 only where oneDNN can compute bfloat16 natively."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_store.metadata import PrecisionChoice
from tests.conftest import make_metadata
from training.precision import choose_precision, cpu_flags, training_precision

AVX2_CPU = frozenset({"fpu", "sse4_2", "avx", "avx2", "fma"})
AVX512_CPU = AVX2_CPU | {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"}
BF16_CPU = AVX512_CPU | {"avx512_bf16"}
AMX_CPU = AVX512_CPU | {"amx_bf16", "amx_tile", "amx_int8"}


@pytest.mark.parametrize("flags", [AVX2_CPU, AVX512_CPU, frozenset()])
def test_a_cpu_without_native_bfloat16_trains_in_float32(flags: frozenset[str]) -> None:
    choice = choose_precision(flags, {})
    assert choice.precision == "float32"
    assert "no native bfloat16" in choice.reason


@pytest.mark.parametrize(("flags", "named"), [(BF16_CPU, "avx512_bf16"), (AMX_CPU, "amx_bf16")])
def test_a_cpu_with_native_bfloat16_trains_in_mixed_bfloat16(flags: frozenset[str], named: str) -> None:
    choice = choose_precision(flags, {})
    assert choice == PrecisionChoice(
        requested="auto", precision="mixed_bfloat16", reason=f"the CPU computes bfloat16 natively ({named})"
    )


@pytest.mark.parametrize("cap", ["AVX2", "avx512_core", "AVX512_CORE_VNNI", "SSE41", "AVX2_VNNI_2"])
@pytest.mark.parametrize("variable", ["ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"])
def test_a_onednn_cap_below_bfloat16_means_float32(variable: str, cap: str) -> None:
    choice = choose_precision(AMX_CPU, {variable: cap})
    assert choice.precision == "float32"
    assert f"{variable}={cap.upper()}" in choice.reason


@pytest.mark.parametrize(
    "cap", ["AVX512_CORE_BF16", "avx512_core_amx", "AVX10_1_512_AMX_FP16", "ALL", "DEFAULT", "", " "]
)
def test_a_onednn_cap_that_keeps_bfloat16_leaves_it_native(cap: str) -> None:
    assert choose_precision(BF16_CPU, {"ONEDNN_MAX_CPU_ISA": cap}).precision == "mixed_bfloat16"


@pytest.mark.parametrize("value", ["0", "false", "False"])
def test_onednn_turned_off_in_tensorflow_means_float32(value: str) -> None:
    choice = choose_precision(BF16_CPU, {"TF_ENABLE_ONEDNN_OPTS": value})
    assert choice.precision == "float32"
    assert "TF_ENABLE_ONEDNN_OPTS" in choice.reason


def test_flags_are_read_from_the_cpuinfo_flags_line(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Some CPU\n"
        "flags\t\t: fpu avx2 avx512f avx512_bf16\nbugs\t\t: spectre_v1\n"
    )
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512f", "avx512_bf16"}


def test_no_cpuinfo_reads_as_no_flags(tmp_path: Path) -> None:
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_an_explicit_precision_is_kept_and_says_who_asked() -> None:
    choice = training_precision("mixed_bfloat16", "--precision")
    assert choice == PrecisionChoice(
        requested="mixed_bfloat16", precision="mixed_bfloat16", reason="asked for by --precision"
    )


def test_auto_is_logged_with_its_reason(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    with caplog.at_level("INFO", logger="training"):
        choice = training_precision("auto", "the cnn preset's default")
    assert choice.precision == "float32"
    assert f"training precision: float32 (auto: {choice.reason})" in caplog.text


def test_metadata_from_before_the_choice_still_loads() -> None:
    metadata = make_metadata("mnist", 1)
    assert "precision" not in metadata.training.model_dump(exclude_unset=True)
    assert metadata.training.precision is None
