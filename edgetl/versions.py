"""Library versions, CPU and git revision recorded with every artifact."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path

_PACKAGES = (
    "edgetl",
    "torch",
    "torchvision",
    "onnx",
    "onnxruntime",
    "openvino",
    "nncf",
    "onnxslim",
    "numpy",
    "tensorrt",
)


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape an artifact (absent ones omitted)."""
    found = {}
    for name in _PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    found["python"] = platform.python_version()
    return found


# CPU features that decide which kernels the runtimes pick (x86 /proc/cpuinfo "flags", Arm "Features").
_CPU_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "asimdhp",
    "asimddp",
    "sve",
    "sve2",
    "i8mm",
    "bf16",
)


def host_info() -> dict[str, str]:
    """CPU model, its SIMD flags, machine and the git revision of edgetl's source tree, if any."""
    cpu = platform.processor() or platform.machine()
    flags: set[str] = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in {"model name", "Model"} and cpu in {platform.processor(), platform.machine()}:
                cpu = value.strip()
            elif key in {"flags", "Features"} and not flags:
                flags = set(value.split())
    info = {
        "cpu": cpu,
        "cpu_flags": " ".join(f for f in _CPU_FLAGS if f in flags),
        "machine": platform.machine(),
        "system": platform.system(),
    }
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
        if rev:
            info["git_revision"] = rev
    except (OSError, subprocess.SubprocessError):
        pass
    return info
