"""The line runtime: run a bundle on new images with the preprocessing and reject threshold it was validated with.

It imports numpy, Pillow, pydantic and the one backend a bundle uses (ONNX Runtime, OpenVINO or TensorRT), never
torch, torchvision, nncf, scikit-learn or matplotlib: ``pip install 'edgetl[onnxruntime]'`` is a line install.
Build-side code imports this package, never the other way round.

::

    from edgetl.runtime import load

    with load("bundle/cpu", precision="int8") as model:
        for p in model.predict(["part_0001.png", "part_0002.png"]):
            print(p.source, p.label, p.score, p.verdict, f"{p.ms:.1f} ms")
"""

from __future__ import annotations

from edgetl.runtime.bundle import Bundle, BundleError, is_bundle, read_manifest
from edgetl.runtime.model import LineModel, Prediction, load
from edgetl.runtime.preprocess import ImageDecodeError, PreprocessSpec, decode_image, preprocess_file
from edgetl.runtime.runner import BackendUnavailable, InputMismatchError, Runner
from edgetl.runtime.verify import verify_bundle

__all__ = [
    "BackendUnavailable",
    "Bundle",
    "BundleError",
    "ImageDecodeError",
    "InputMismatchError",
    "LineModel",
    "Prediction",
    "PreprocessSpec",
    "Runner",
    "decode_image",
    "is_bundle",
    "load",
    "preprocess_file",
    "read_manifest",
    "verify_bundle",
]
