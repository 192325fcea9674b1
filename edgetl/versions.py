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


def host_info() -> dict[str, str]:
    """CPU model, machine and the git revision of the working tree, if any."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {"cpu": cpu, "machine": platform.machine(), "system": platform.system()}
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
        if rev:
            info["git_revision"] = rev
    except (OSError, subprocess.SubprocessError):
        pass
    return info
