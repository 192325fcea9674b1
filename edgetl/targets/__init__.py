"""Backend registry: backend name -> Target class, imported lazily."""

from __future__ import annotations

import importlib

from edgetl.targets.base import Artifact, BackendUnavailable, Runner, Target
from edgetl.targets.profiles import TargetProfile, available_profiles, resolve_profile

_REGISTRY = {
    "onnxruntime": "edgetl.targets.onnxruntime:OnnxRuntimeTarget",
    "openvino": "edgetl.targets.openvino:OpenVinoTarget",
    "tensorrt": "edgetl.targets.tensorrt:TensorRTTarget",
}


def backends() -> list[str]:
    """Registered backend names."""
    return list(_REGISTRY)


def get_target(backend: str) -> Target:
    """Instantiate the Target of a backend."""
    if backend not in _REGISTRY:
        raise BackendUnavailable(f"backend {backend!r} is not supported here; known: {', '.join(_REGISTRY)}")
    module_name, class_name = _REGISTRY[backend].split(":")
    target: Target = getattr(importlib.import_module(module_name), class_name)()
    return target


__all__ = [
    "Artifact",
    "BackendUnavailable",
    "Runner",
    "Target",
    "TargetProfile",
    "available_profiles",
    "backends",
    "get_target",
    "resolve_profile",
]
