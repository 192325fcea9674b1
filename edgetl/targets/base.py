"""The one interface every backend implements: Target (compile, load) and Runner (infer).

Runners are the line runtime's (:mod:`edgetl.runtime.runner`): a compiled artifact runs here through the very
code that runs it on the line.
"""

from __future__ import annotations

import abc
import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, ValidationError

from edgetl.config import StrictModel
from edgetl.errors import IntegrityError, InvalidFileError, MissingInputError
from edgetl.files import read_json, sha256_file, write_json_atomic
from edgetl.quantize.calibration import CalibrationSet
from edgetl.quantize.gate import GateData
from edgetl.runtime.runner import BackendUnavailable, Runner
from edgetl.targets.profiles import Precision, TargetProfile
from edgetl.versions import library_versions

ARTIFACT_FILE = "artifact.json"

__all__ = ["ARTIFACT_FILE", "Artifact", "BackendUnavailable", "Runner", "Target"]


class Artifact(StrictModel):
    """A compiled model and what is needed to run it; saved as artifact.json beside the files."""

    profile: str = Field(description="Target profile name.")
    backend: str
    precision: Precision
    device: str = "CPU"
    model_file: str = Field(description="Main file, relative to the artifact folder.")
    files: dict[str, str] = Field(default_factory=dict, description="Every file with its sha256.")
    size_bytes: int = 0
    input_name: str = "input"
    input_shape: list[int | str] = Field(default_factory=list)
    classes: list[str] = Field(default_factory=list)
    preprocess: dict[str, Any] = Field(default_factory=dict)
    source_onnx_sha256: str = ""
    details: dict[str, Any] = Field(default_factory=dict, description="Backend-specific facts (quantization...).")
    versions: dict[str, str] = Field(default_factory=dict)
    folder: Path | None = Field(None, exclude=True, description="Where it was loaded from (not saved).")

    @property
    def model_path(self) -> Path:
        """Absolute path of the main model file."""
        if self.folder is None:
            raise ValueError("artifact has no folder; load it with Artifact.read(folder)")
        return self.folder / self.model_file

    def write(self, folder: Path) -> None:
        """Record file hashes and sizes, then write artifact.json."""
        self.files = {
            p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != ARTIFACT_FILE
        }
        self.size_bytes = sum((folder / name).stat().st_size for name in self.files)
        write_json_atomic(folder / ARTIFACT_FILE, self.model_dump(mode="json"))

    @classmethod
    def read(cls, folder: Path, *, verify: bool = True) -> Artifact:
        """Load artifact.json; with ``verify`` every file must match its recorded sha256."""
        path = Path(folder) / ARTIFACT_FILE
        if not path.is_file():
            raise MissingInputError(f"{path} is missing; compile the target again ('edgetl compile').")
        try:
            artifact = cls.model_validate(read_json(path))
        except ValidationError as exc:
            fields = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'top level'}: {e['msg']}" for e in exc.errors()[:5])
            raise InvalidFileError(
                f"{path} is not a valid artifact record ({fields}); recompile with 'edgetl compile'."
            ) from exc
        artifact.folder = Path(folder)
        if verify:
            recompile = "recompile with 'edgetl compile RUN --target " + artifact.profile + "'"
            if artifact.model_file not in artifact.files:
                raise IntegrityError(
                    f"{path} does not list the sha256 of its model file {artifact.model_file!r} "
                    f"(files: {sorted(artifact.files) or 'none'}), so the model cannot be verified; {recompile}."
                )
            for name in [artifact.model_file, *artifact.files]:
                if Path(name).name != name or name in {".", ".."}:
                    raise IntegrityError(f"{path} names {name!r}, which is not a file of {folder}; {recompile}.")
            for name, digest in artifact.files.items():
                file = Path(folder) / name
                if not file.is_file() or sha256_file(file) != digest:
                    raise IntegrityError(
                        f"{file} is missing or differs from {path} (sha256); recompile with 'edgetl compile'."
                    )
        return artifact


class Target(abc.ABC):
    """A backend: compile an ONNX model for a profile, load the artifact as a Runner."""

    name: ClassVar[str]
    package: ClassVar[str]
    install_hint: ClassVar[str] = ""
    compiles_without_backend: ClassVar[bool] = False  # True: compile prepares files here, the device finishes

    def is_available(self) -> bool:
        """Import probe (without importing the package); never raises."""
        try:
            return importlib.util.find_spec(self.package) is not None
        except (ImportError, ValueError):
            return False

    def version(self) -> str:
        """Backend version, or '' when unavailable."""
        try:
            return importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            return ""

    def require(self) -> None:
        """Raise BackendUnavailable with the install hint when the package is missing."""
        if not self.is_available():
            raise BackendUnavailable(f"{self.package} is not installed; {self.install_hint or 'pick another target.'}")

    def artifact(
        self, profile: TargetProfile, precision: Precision, model_file: str, details: dict[str, Any]
    ) -> Artifact:
        """The Artifact record of a freshly compiled model."""
        return Artifact(
            profile=profile.name,
            backend=self.name,
            precision=precision,
            device=profile.device,
            model_file=model_file,
            details=details,
            versions=library_versions(),
        )

    @abc.abstractmethod
    def compile(
        self,
        onnx: Path,
        profile: TargetProfile,
        out: Path,
        calib: CalibrationSet | None,
        *,
        precision: Precision,
        gate: GateData | None = None,
    ) -> Artifact:
        """Build one precision of ``onnx`` for ``profile`` into the (empty) folder ``out``.

        INT8 follows ``profile.quantization`` (a build's overrides are already applied to it); with ``gate`` it
        is checked on those images and climbs the ladder when it fails (:func:`edgetl.quantize.quantize`).
        """

    @abc.abstractmethod
    def load(self, artifact: Artifact, *, threads: int | None = None) -> Runner:
        """Open an artifact for inference."""

    def to_pixel_input(
        self, artifact: Artifact, folder: Path, spec: Any, pixels: Any, *, gate: Any = None, limits: Any = None
    ) -> dict[str, Any] | None:
        """Rewrite the freshly compiled artifact in ``folder`` to take uint8 NHWC pixels (normalisation in the
        graph, :mod:`edgetl.pixel_input`), checked on ``pixels`` against the float model (a quantized one, with
        ``gate`` and ``limits``, by its accuracy gate); returns the check, or None where the backend keeps float
        input (the default)."""
        return None
