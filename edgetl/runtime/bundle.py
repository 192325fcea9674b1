"""Open a bundle on the line: every file checked against manifest.json (sha256) and no file the manifest does not
list, before anything in it is loaded; then the runner of one precision.

A bundle may gain files on the device after it was written, and only these: TensorRT engines built there
(``engines/<precision>/``, each checked against its own artifact.json), their Triton plans, and the verify and
bench records. Anything else in the folder is refused: a bundle is copied whole, never edited.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from edgetl.errors import EdgetlError, InvalidFileError
from edgetl.files import is_inside, read_json, sha256_file
from edgetl.runtime.preprocess import PreprocessSpec, model_input
from edgetl.runtime.runner import Runner

if TYPE_CHECKING:
    from edgetl.runtime.monitor import DriftMonitor

MANIFEST = "manifest.json"
KIND = "edgetl-bundle"
SCHEMA_VERSION = "2.0"
# Written on the device after the manifest: what `edgetl compile`, `verify` and `bench` add.
DEVICE_OUTPUTS = ("engines/*", "triton/*/1/model.plan", "verify.json", "bench.json", ".edgetl.lock")
ENGINES = "engines"
ARTIFACT_FILE = "artifact.json"
PRECISION_ORDER = ("fp32", "fp16", "bf16", "int8")
_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class BundleError(EdgetlError, ValueError):
    """A bundle that is incomplete, altered or fails its parity pack; the message names the file."""


def _relative(path: str, root: Path) -> Path:
    """A manifest path inside the bundle (symbolic links followed), or BundleError."""
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise BundleError(f"{root / MANIFEST} lists {path!r}, which points outside the bundle; re-create the bundle.")
    full = root / Path(*pure.parts)
    if not is_inside(full, root):
        raise BundleError(
            f"{full} leads outside the bundle (a symbolic link to {full.resolve()}); copy the bundle as plain files."
        )
    return full


def _check_shape(manifest: dict[str, Any], path: Path) -> None:
    """The fields the device reads, with the types it expects (no schema library: the runtime stays lean)."""
    problems = []
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in manifest["files"].items()):
        problems.append("files must map names to sha256 strings")
    for key, kind in (("profile", dict), ("classes", list), ("preprocess", dict), ("models", dict), ("parity", dict)):
        if not isinstance(manifest.get(key), kind):
            problems.append(f"{key} must be a {kind.__name__}")
    for name in manifest["files"]:
        _relative(str(name), path.parent)
    listed = set(manifest["files"])
    named: list[str] = []
    models = manifest.get("models")
    if isinstance(models, dict):
        for precision, model in models.items():
            if precision not in PRECISION_ORDER or not isinstance(model, dict):
                problems.append(f"models.{precision} is not a known precision with its files")
                continue
            files = model.get("files", [])
            if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
                problems.append(f"models.{precision}.files must be a list of file names")
            else:
                named += files
            triton = model.get("triton")
            if triton is not None and (not isinstance(triton, str) or not _PLAIN.fullmatch(triton)):
                problems.append(f"models.{precision}.triton {triton!r} becomes a folder name: letters, digits, _.-")
    drift = manifest.get("drift")
    if drift is not None:
        if not isinstance(drift, dict) or not all(isinstance(drift.get(k), str) for k in ("reference", "embedder")):
            problems.append("drift must name its reference and embedder files")
        else:
            named += [drift["reference"], drift["embedder"]]
    parity = manifest.get("parity")
    if isinstance(parity, dict):
        references = parity.get("references", {})
        if not isinstance(references, dict):
            problems.append("parity.references must map precisions to files")
        else:
            named += [str(v) for v in references.values()]
        named.append(str(parity.get("inputs", "")))
    for name in named:
        _relative(name, path.parent)
        if name not in listed:
            problems.append(f"{name!r} is named but not among the listed, hash-checked files")
    if problems:
        raise BundleError(
            f"{path} is not a valid bundle manifest ({'; '.join(problems[:5])}); copy the bundle again from the "
            "build host, or re-create it there with 'edgetl bundle RUN'."
        )


def is_bundle(folder: Path) -> bool:
    """True when ``folder`` holds a bundle manifest."""
    return (Path(folder) / MANIFEST).is_file()


def unlisted_files(folder: Path, manifest: dict[str, Any]) -> list[str]:
    """Files in the bundle folder that neither the manifest lists nor a device step writes."""
    listed = set(manifest["files"]) | {MANIFEST}
    allowed = tuple(manifest.get("device_outputs", DEVICE_OUTPUTS))
    found = []
    for path in sorted(Path(folder).rglob("*")):
        if path.is_dir():
            continue
        name = path.relative_to(folder).as_posix()
        if name not in listed and not any(fnmatch.fnmatchcase(name, pattern) for pattern in allowed):
            found.append(name)
    return found


def read_manifest(folder: Path) -> dict[str, Any]:
    """Load manifest.json, check every listed file against its sha256 and refuse unlisted files.

    Raises:
        BundleError: the manifest is missing or not a bundle's, a file is missing, differs or is not listed.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise BundleError(f"{path} is missing: {folder} is not an edgetl bundle (made by 'edgetl build').")
    try:
        manifest = read_json(path)
    except InvalidFileError as exc:
        raise BundleError(
            f"{path} is damaged (not valid JSON); copy the bundle again from the build host.", hint=exc.hint
        ) from exc
    if not isinstance(manifest, dict) or manifest.get("kind") != KIND or not isinstance(manifest.get("files"), dict):
        raise BundleError(
            f"{path} is not an edgetl bundle manifest (damaged or truncated); copy the bundle again from the build "
            "host, or re-create it there with 'edgetl bundle RUN'."
        )
    _check_shape(manifest, path)
    for name, digest in manifest["files"].items():
        file = _relative(name, folder)
        if not file.is_file():
            raise BundleError(f"{file} is missing from the bundle; copy the whole bundle folder again.")
        if sha256_file(file) != digest:
            raise BundleError(
                f"{file} differs from the bundle manifest (sha256): the copy is damaged or was edited; "
                "copy the bundle again from the build host."
            )
    extra = unlisted_files(folder, manifest)
    if extra:
        shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        raise BundleError(
            f"{folder} holds files its manifest does not list: {shown}. A bundle is used as it was written; "
            "remove them, or copy the bundle again from the build host."
        )
    return manifest


@dataclass
class Bundle:
    """A verified bundle folder and what its manifest says."""

    folder: Path
    manifest: dict[str, Any]
    thresholds: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def open(cls, folder: Path | str) -> Bundle:
        """Verify the folder (see :func:`read_manifest`) and read its thresholds."""
        bundle = cls(folder=Path(folder), manifest=read_manifest(Path(folder)))
        name = bundle.manifest.get("thresholds")
        bundle.thresholds = read_json(bundle.file(name)) if name else {}
        return bundle

    def file(self, name: str) -> Path:
        """A file the manifest names, which must be one of the files it lists (so its sha256 was checked)."""
        if name not in self.manifest["files"]:
            raise BundleError(
                f"{self.folder / MANIFEST} names {name!r}, which is not among its files; re-create the bundle."
            )
        return _relative(name, self.folder)

    @property
    def profile(self) -> dict[str, Any]:
        """The target profile the bundle was made for (a plain mapping)."""
        return dict(self.manifest["profile"])

    @property
    def backend(self) -> str:
        """onnxruntime, openvino or tensorrt."""
        return str(self.manifest.get("backend", self.profile["backend"]))

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def spec(self) -> PreprocessSpec:
        return PreprocessSpec.model_validate(self.manifest["preprocess"])

    def spec_of(self, precision: str) -> PreprocessSpec:
        """The input of one precision's model: uint8 pixels or the float tensor (the bundle's, where not given)."""
        own = self.manifest["models"][precision].get("preprocess")
        return self.spec if own is None else PreprocessSpec.model_validate(own)

    @property
    def precisions(self) -> list[str]:
        return list(self.manifest["models"])

    @property
    def good_class(self) -> str | None:
        """The good-part class (the reject score is 1 - P(good)), when the bundle names one."""
        good = self.manifest.get("good_class")
        if good is None:
            good = next((t["good_class"] for t in self.thresholds.values() if "good_class" in t), None)
        return None if good is None else str(good)

    def default_precision(self) -> str:
        """FP32 when the bundle has it, else its most precise model."""
        return next(p for p in PRECISION_ORDER if p in self.manifest["models"])

    def check_precision(self, precision: str | None) -> str:
        """``precision`` (None: the default) when the bundle has it, else BundleError listing what it has."""
        precision = precision or self.default_precision()
        if precision not in self.manifest["models"]:
            raise BundleError(
                f"{self.folder} has no {precision} model; it has {', '.join(self.precisions)}.",
                hint="pass --precision with one of those.",
            )
        return precision

    def model_file(self, precision: str) -> Path:
        """The main model file of a precision (the ONNX input of a TensorRT engine)."""
        entry = self.manifest["models"][precision]
        for name in entry.get("files", []):
            self.file(name)  # an IR's .bin as well as its .xml
        return self.file(entry.get("file") or entry["onnx"])

    def drift_monitor(self, *, window: int = 100, every: int = 1, threads: int | None = None) -> DriftMonitor:
        """The drift monitor of this bundle: its reference embeddings and its embedder.

        Raises:
            BundleError: the bundle carries no drift reference (made by an older edgetl) or a damaged one.
            BackendUnavailable: neither ONNX Runtime nor OpenVINO is installed to run the embedder.
        """
        from edgetl.runtime.drift import DriftReference
        from edgetl.runtime.monitor import DriftMonitor, embedder_runner

        entry = self.manifest.get("drift")
        if not isinstance(entry, dict):
            raise BundleError(
                f"{self.folder} carries no drift reference.",
                hint="re-create the bundle on the build host with 'edgetl bundle RUN' (its training run needs at "
                "least 10 train and validation images), or predict without --drift.",
            )
        try:
            reference = DriftReference.load(self.file(str(entry["reference"])))
        except (KeyError, ValueError, OSError) as exc:
            raise BundleError(
                f"{self.folder}: its drift reference cannot be read ({exc}); re-create the bundle."
            ) from exc
        embedder = embedder_runner(self.file(str(entry["embedder"])), threads=threads)
        try:
            return DriftMonitor(reference, embedder, window=window, every=every, spec=self.spec)
        except BaseException:
            embedder.close()
            raise

    def parity_inputs(self, precision: str) -> np.ndarray:
        """The parity pack's golden images as this precision's model takes them (stored as uint8 pixels; float32
        tensors in bundles of earlier versions)."""
        stored = np.load(self.file(self.manifest["parity"]["inputs"]), allow_pickle=False)
        return model_input(stored, self.spec_of(precision)) if stored.dtype == np.uint8 else stored

    def engine_dir(self, precision: str) -> Path:
        return self.folder / ENGINES / precision

    def has_engine(self, precision: str) -> bool:
        """True when ``edgetl compile`` built this precision's TensorRT engine here."""
        return (self.engine_dir(precision) / ARTIFACT_FILE).is_file()

    def runner(self, precision: str, *, threads: int | None = None, device: str | None = None) -> Runner:
        """Open the runner of one precision.

        ``device``: None is the bundle's own (OpenVINO: the profile's device; TensorRT: the engine built here);
        an OpenVINO device name (CPU, GPU, NPU, AUTO); ``cpu`` on a TensorRT bundle runs its ONNX in ONNX Runtime
        (INT8 as unfused Q/DQ, the arithmetic TensorRT's explicit quantization follows).
        """
        precision = self.check_precision(precision)
        path = self.model_file(precision)
        backend = self.backend
        if backend == "onnxruntime":
            if device not in (None, "cpu", "CPU"):
                raise BundleError(f"{self.folder} is an ONNX Runtime CPU bundle; it runs on device 'cpu' only.")
            from edgetl.runtime.onnxruntime import OnnxRuntimeRunner

            return OnnxRuntimeRunner(path, threads=threads)
        if backend == "openvino":
            from edgetl.runtime.openvino import OpenVinoRunner, precision_options

            options = precision_options(self.manifest["models"][precision], precision=precision)
            return OpenVinoRunner(path, device or str(self.profile.get("device", "CPU")), threads=threads, **options)
        if backend != "tensorrt":
            raise BundleError(f"{self.folder / MANIFEST} names an unknown backend {backend!r}; rebuild the bundle.")
        if device in ("cpu", "CPU"):
            from edgetl.runtime.onnxruntime import OnnxRuntimeRunner

            # Unfused Q/DQ: ORT's fused int8 kernels would add their own rounding (and saturation on some CPUs).
            return OnnxRuntimeRunner(path, threads=threads, optimization="none" if precision == "int8" else "all")
        if not self.has_engine(precision):
            raise BundleError(
                f"{self.folder} has no {precision} TensorRT engine built on this device yet; build the engines "
                f"here first with 'edgetl compile {self.folder}'.",
                hint="or use device 'cpu' (--device cpu) to run the bundle's ONNX model in ONNX Runtime.",
            )
        return self._engine_runner(precision)

    def _engine_runner(self, precision: str) -> Runner:
        from edgetl.runtime.tensorrt import TensorRTRunner, check_engine

        folder = self.engine_dir(precision)
        record = read_json(folder / ARTIFACT_FILE)
        for name, digest in record.get("files", {}).items():
            file = _relative(name, folder)
            if not file.is_file() or sha256_file(file) != digest:
                raise BundleError(
                    f"{file} is missing or differs from {folder / ARTIFACT_FILE} (sha256); rebuild the engine with "
                    f"'edgetl compile {self.folder} --precision {precision}'."
                )
        engine = record.get("details", {}).get("engine") or {}
        check_engine(engine, folder)
        return TensorRTRunner(_relative(record["model_file"], folder), dla_core=engine.get("dla_core"))

    def runtime_name(self, precision: str, *, device: str | None = None) -> str:
        """What runs a precision with ``device``, for messages and results (before opening it)."""
        if self.backend == "tensorrt":
            return "onnxruntime-cpu" if device in ("cpu", "CPU") else "tensorrt"
        if self.backend == "openvino":
            return f"openvino-{device or self.profile.get('device', 'CPU')}"
        return "onnxruntime-cpu"
