"""What this CPU's instruction set offers for reduced precision: BF16 on Intel (AMX or AVX512-BF16)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

BF16_FLAGS = ("amx_bf16", "avx512_bf16")
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str]:
    """The ``flags`` of the first processor in /proc/cpuinfo (empty where there is no such file)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def openvino_capabilities() -> set[str]:
    """OpenVINO's OPTIMIZATION_CAPABILITIES of the CPU device (empty when OpenVINO is not installed)."""
    try:
        import openvino as ov

        return {str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")}
    except Exception:
        return set()


def bf16_support(flags: Iterable[str] | None = None, capabilities: Iterable[str] | None = None) -> tuple[bool, str]:
    """(whether BF16 inference runs natively here, the reason in words).

    ``flags``: CPU flags (default: /proc/cpuinfo); ``capabilities``: OpenVINO's CPU optimization capabilities
    (default: asked of OpenVINO). BF16 counts only with amx_bf16 or avx512_bf16: elsewhere OpenVINO would emulate
    it, slower than FP32.
    """
    found = set(cpu_flags() if flags is None else flags)
    have = [f for f in BF16_FLAGS if f in found]
    if have:
        return True, f"the CPU has {' and '.join(have)}"
    caps = set(openvino_capabilities() if capabilities is None else capabilities)
    if not found and "BF16" in caps:
        return True, "OpenVINO reports BF16 among the CPU's optimization capabilities"
    return False, (
        "this CPU has neither amx_bf16 nor avx512_bf16 (BF16 would be emulated, slower than FP32)"
        if found
        else "this CPU's flags cannot be read and OpenVINO does not report BF16 for it"
    )
