"""Target profiles: one YAML file per deployment target, found in a checkout or an installed wheel."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from edgetl.config import ConfigError, StrictModel
from edgetl.paths import PlainName
from edgetl.quantize.settings import QuantizationSpec

Precision = Literal["fp32", "fp16", "bf16", "int8"]

__all__ = ["Precision", "QuantizationSpec", "TargetProfile", "TensorRTSpec"]


class TensorRTSpec(StrictModel):
    """What a TensorRT profile assumes about the device and how engines are built there."""

    version: str = Field(description="TensorRT version the profile was written for (major.minor).")
    jetpack: str | None = Field(None, description="JetPack release on a Jetson; None on x86 GPU boxes.")
    platform: Literal["jetson", "x86_64"] = Field(description="Device family.")
    workspace_mb: int = Field(1024, ge=64, description="Builder workspace memory pool limit.")
    dla_core: int | None = Field(None, ge=0, description="DLA core to place layers on (GPU fallback on).")
    min_batch: int = Field(1, ge=1, description="Smallest batch of the optimization profile.")
    opt_batch: int = Field(1, ge=1, description="Batch the builder tunes for.")
    max_batch: int = Field(1, ge=1, description="Largest batch; > 1 needs export.dynamic_batch.")
    builder_optimization_level: int = Field(3, ge=0, le=5, description="TensorRT default is 3.")

    @model_validator(mode="after")
    def _ordered(self) -> TensorRTSpec:
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError("batches must satisfy min_batch <= opt_batch <= max_batch")
        return self


class TargetProfile(StrictModel):
    """A deployment target: backend, device and what it accepts."""

    name: PlainName = Field(description="Profile name, the file name without .yaml; the folder targets/<name>/.")
    description: str = Field("", description="One line for humans.")
    backend: Literal["onnxruntime", "openvino", "tensorrt"]
    aliases: list[str] = Field(default_factory=list, description="Other names accepted by --target.")
    device: str = Field("CPU", description="Backend device name (CPU, GPU, ...).")
    opset: int = Field(17, ge=11, le=23, description="Highest ONNX opset the backend parses.")
    precisions: list[Precision] = Field(default_factory=lambda: list[Precision](["fp32", "int8"]))
    quantization: QuantizationSpec = Field(default_factory=lambda: QuantizationSpec())
    tensorrt: TensorRTSpec | None = Field(None, description="Engine settings; required for the tensorrt backend.")

    @model_validator(mode="after")
    def _backend_settings(self) -> TargetProfile:
        if self.backend == "tensorrt" and self.tensorrt is None:
            raise ValueError("a tensorrt profile needs a 'tensorrt:' section (version, platform, ...)")
        if "bf16" in self.precisions and self.backend != "openvino":
            raise ValueError("bf16 runs through OpenVINO on Intel CPUs (AMX or AVX512-BF16): use backend openvino")
        if self.backend == "tensorrt" and self.quantization.activations != "int8":
            raise ValueError("TensorRT needs signed int8 activations: set quantization.activations: int8")
        return self


def profile_dirs() -> list[Path]:
    """Folders searched for profiles: the wheel's copy first, then a source checkout's targets/."""
    here = Path(__file__).resolve().parent.parent
    return [p for p in (here / "_profiles", here.parent / "targets") if p.is_dir()]


def _fields(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'top level'}: {e['msg']}" for e in exc.errors()[:5])


def load_profile(path: Path) -> TargetProfile:
    """Read one profile YAML (its name defaults to the file name without .yaml).

    Raises:
        ConfigError: the file is unreadable, not YAML, not a mapping, or not a valid profile; the message names it.
    """
    fix = "fix it, or pick a built-in profile ('edgetl targets' lists them)"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"target profile {path} cannot be read ({exc}); {fix}.") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"target profile {path} is not valid YAML ({exc}); {fix}.") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"target profile {path} must hold a mapping (backend:, precisions:, ...), not a {type(raw).__name__}; "
            f"{fix}."
        )
    try:
        return TargetProfile.model_validate({"name": path.stem, **raw})
    except ValidationError as exc:
        raise ConfigError(f"target profile {path} is invalid ({_fields(exc)}); {fix}.") from exc


@cache
def _all_profiles() -> dict[str, TargetProfile]:
    profiles: dict[str, TargetProfile] = {}
    for folder in profile_dirs():
        for path in sorted(folder.glob("*.yaml")):
            if path.stem not in profiles:
                profiles[path.stem] = load_profile(path)
    return profiles


def available_profiles() -> dict[str, TargetProfile]:
    """Every known profile by name."""
    return dict(_all_profiles())


def resolve_profile(name: str) -> TargetProfile:
    """Find a profile by name or alias, or by a path to a YAML file."""
    path = Path(name)
    if path.suffix in {".yaml", ".yml"}:
        if path.is_file():
            return load_profile(path)
        raise ConfigError(f"target profile {path} does not exist (or is not a file); give the path of a profile YAML.")
    profiles = _all_profiles()
    if name in profiles:
        return profiles[name]
    for profile in profiles.values():
        if name in profile.aliases:
            return profile
    known = sorted({*profiles, *(a for p in profiles.values() for a in p.aliases)})
    raise ConfigError(
        f"unknown target {name!r}; pick one of {', '.join(known) or '(none found)'} or pass a profile YAML path."
    )
