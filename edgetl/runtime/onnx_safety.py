"""Refuse ONNX files whose external data points outside the model's folder, before anything loads them.

An ONNX model may keep its weights in side files named by relative paths inside the protobuf. A crafted
model can name ``../../etc/shadow`` or an absolute path, and a runtime would read that file as weights.

The check reads the protobuf with the ``onnx`` package. A runtime-only install has no ``onnx``: there
:func:`loadable_onnx` leans on ONNX Runtime's own check of the same rule (ONNX Runtime 1.24 and later).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgetl.errors import EdgetlError, MissingInputError
from edgetl.files import is_inside
from edgetl.runtime.runner import has_package


class UntrustedFileError(EdgetlError, ValueError):
    """A file that edgetl refuses to load, with the reason and the fix."""


def _sparse(sparse: Any) -> Iterator[Any]:
    yield sparse.values
    yield sparse.indices


def _node_tensors(nodes: Any) -> Iterator[Any]:
    """Tensors in node attributes (dense and sparse), subgraphs included."""
    for node in nodes:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("sparse_tensor"):
                yield from _sparse(attr.sparse_tensor)
            for sparse in attr.sparse_tensors:
                yield from _sparse(sparse)
            if attr.HasField("g"):
                yield from _graph_tensors(attr.g)
            for sub in attr.graphs:
                yield from _graph_tensors(sub)


def _graph_tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from _sparse(sparse)
    yield from _node_tensors(graph.node)


def _tensors(model: Any) -> Iterator[Any]:
    """Every tensor a runtime may read: the graph's and those inside the model's local functions."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        yield from _node_tensors(function.node)


def external_data_files(model_path: Path) -> list[str]:
    """The external-data locations an ONNX file names (as written in the file).

    Raises:
        UntrustedFileError: a location is absolute, leaves the model's folder (``..``, a symlink) or is missing.
    """
    import onnx

    model_path = Path(model_path)
    try:
        proto = onnx.load(str(model_path), load_external_data=False)
    except Exception as exc:
        raise UntrustedFileError(
            f"{model_path} is not a readable ONNX file ({exc}); it is damaged or not an ONNX model",
            hint="write it again: 'edgetl export RUN' for export/model.onnx, 'edgetl compile RUN --target ...' for "
            "a compiled target, or copy the bundle again",
        ) from exc
    folder = model_path.resolve().parent
    found: list[str] = []
    for tensor in _tensors(proto):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
        if not location:
            raise UntrustedFileError(f"{model_path}: tensor {tensor.name!r} has external data without a location.")
        candidate = Path(location)
        if candidate.is_absolute() or not is_inside(folder / candidate, folder):
            raise UntrustedFileError(
                f"{model_path}: tensor {tensor.name!r} reads its data from {location!r}, outside the model's folder "
                f"{folder}; refused. Keep external data files beside the model (re-export with "
                "onnx.save(..., save_as_external_data=True, location='<name>.data'))."
            )
        if not (folder / candidate).is_file():
            raise UntrustedFileError(
                f"{model_path}: external data file {location!r} is missing; copy it beside the model."
            )
        found.append(location)
    return sorted(set(found))


def check_onnx_file(model_path: Path) -> Path:
    """Return ``model_path`` when it is safe to hand to a runtime; raise :class:`UntrustedFileError` otherwise."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise MissingInputError(
            f"ONNX file {model_path} is missing; run the stage that writes it (edgetl export or compile)."
        )
    external_data_files(model_path)
    return model_path


# First ONNX Runtime release that refuses external data outside the model's folder by itself.
ORT_CHECKS_EXTERNAL_DATA = (1, 24)


def loadable_onnx(model_path: Path) -> Path:
    """``model_path`` when ONNX Runtime may load it: checked here with ``onnx`` when installed, else by ORT itself.

    Raises:
        UntrustedFileError: external data points outside the model's folder, or neither ``onnx`` nor a recent
            enough ONNX Runtime is here to check it.
    """
    if has_package("onnx"):
        return check_onnx_file(model_path)
    model_path = Path(model_path)
    if not model_path.is_file():
        raise MissingInputError(f"ONNX file {model_path} is missing; copy the whole bundle folder again.")
    try:
        version = importlib.metadata.version("onnxruntime")
    except importlib.metadata.PackageNotFoundError:
        version = "0"
    numbers = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    if numbers < ORT_CHECKS_EXTERNAL_DATA:
        raise UntrustedFileError(
            f"{model_path} cannot be checked here: ONNX Runtime {version} does not refuse external data outside "
            "the model's folder by itself and the onnx package is not installed.",
            hint="pip install 'onnxruntime>=1.24' (or pip install onnx).",
        )
    return model_path
