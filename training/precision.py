"""The precision `auto` trains in: mixed bfloat16 only where the CPU computes bfloat16 natively.

TensorFlow runs bfloat16 convolutions through oneDNN. With AVX512-BF16 or AMX that is faster than
float32; without them (an AVX2 CPU) TensorFlow emulates the bfloat16 arithmetic, and the `cnn`'s
training step costs over ten times float32's CPU time (`python -m bench.training_time`). oneDNN
also obeys `ONEDNN_MAX_CPU_ISA`: capped below AVX512_CORE_BF16, the instructions exist but go
unused (TensorFlow, seeing the CPU's flags, still hands oneDNN the bfloat16 convolutions, and it
refuses them), so `auto` reads the cap as well as the CPU's flags.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from model_store.metadata import PrecisionChoice
from training.presets import AUTO, Precision

log = logging.getLogger("training")

CPUINFO = Path("/proc/cpuinfo")
# The x86 flags (as Linux names them) of instructions that compute in bfloat16.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# oneDNN's ISA names, from `ONEDNN_MAX_CPU_ISA` (or its former name `DNNL_MAX_CPU_ISA`), whose
# kernels compute bfloat16 natively; an unset cap, `ALL` and `DEFAULT` leave every ISA available.
NATIVE_BF16_ISAS = frozenset(
    {
        "ALL",
        "DEFAULT",
        "AVX512_CORE_BF16",
        "AVX512_CORE_FP16",
        "AVX512_CORE_AMX",
        "AVX512_CORE_AMX_FP16",
        "AVX10_1_512",
        "AVX10_1_512_AMX",
        "AVX10_1_512_AMX_FP16",
        "AVX10_2_512",
        "AVX10_2_512_AMX_2",
    }
)
ISA_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The CPU's feature flags as Linux lists them; empty where there is no /proc/cpuinfo."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def choose_precision(flags: frozenset[str], environ: Mapping[str, str]) -> PrecisionChoice:
    """What `auto` trains in on a CPU with `flags`, under the oneDNN settings in `environ`."""
    native = [flag for flag in NATIVE_BF16_FLAGS if flag in flags]
    if not native:
        return PrecisionChoice(
            requested=AUTO,
            precision="float32",
            reason="the CPU has no native bfloat16 (neither avx512_bf16 nor amx_bf16): bfloat16 would be "
            "emulated, several times slower than float32",
        )
    if environ.get("TF_ENABLE_ONEDNN_OPTS", "").strip().lower() in ("0", "false"):
        return PrecisionChoice(
            requested=AUTO,
            precision="float32",
            reason="TF_ENABLE_ONEDNN_OPTS turns oneDNN off, and TensorFlow's own kernels emulate bfloat16",
        )
    for variable in ISA_VARIABLES:
        cap = environ.get(variable, "").strip().upper()
        if cap and cap not in NATIVE_BF16_ISAS:
            return PrecisionChoice(
                requested=AUTO,
                precision="float32",
                reason=f"{variable}={cap} keeps oneDNN below AVX512_CORE_BF16, so bfloat16 would be emulated",
            )
    return PrecisionChoice(
        requested=AUTO,
        precision="mixed_bfloat16",
        reason=f"the CPU computes bfloat16 natively ({', '.join(native)})",
    )


def training_precision(requested: Precision, source: str) -> PrecisionChoice:
    """`requested` (by `source`: the flag, or a preset's default) resolved for this CPU and
    environment, and logged with its reason."""
    if requested == AUTO:
        choice = choose_precision(cpu_flags(), os.environ)
    else:
        choice = PrecisionChoice(requested=requested, precision=requested, reason=f"asked for by {source}")
    log.info("training precision: %s (%s: %s)", choice.precision, choice.requested, choice.reason)
    return choice
