"""The runner template every backend fills in: the public ``infer`` checks the batch, ``_infer`` runs it.

After Polygraphy's BaseRunner: a wrong dtype or shape is refused here with a message that says what the model
takes, before a backend turns it into its own error (or, worse, into silently wrong logits).
"""

from __future__ import annotations

import abc
import importlib.util
from collections.abc import Sequence
from types import TracebackType

import numpy as np

from edgetl.errors import EdgetlError


class BackendUnavailable(EdgetlError, RuntimeError):
    """The backend's Python package (or device) is missing here; the message says what to do."""


class InputMismatchError(EdgetlError, ValueError):
    """A batch whose dtype or shape the model does not take."""


def has_package(name: str) -> bool:
    """True when ``name`` can be imported here (probed without importing it); never raises."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def static_dims(dims: Sequence[object]) -> tuple[int | None, ...]:
    """A backend's input dims as ints, None for a dynamic axis (symbolic names, -1, None)."""
    return tuple(d if isinstance(d, int) and d >= 0 else None for d in dims)


class Runner(abc.ABC):
    """A loaded model: ``with runner: logits = runner.infer(batch)``.

    Subclasses set ``input_shape`` (None for a dynamic axis) and implement ``_infer``.
    """

    runtime: str = "runner"  # what results and messages call it: onnxruntime-cpu, openvino-CPU, tensorrt
    concurrent: bool = False  # True: infer may be called from several threads at once
    input_dtype: np.dtype = np.dtype(np.float32)
    input_shape: tuple[int | None, ...] = ()

    def __enter__(self) -> Runner:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def max_batch(self) -> int | None:
        """The fixed batch size of the model, None when its batch axis is dynamic."""
        return self.input_shape[0] if self.input_shape else None

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """The model's input batch (float32 NCHW, or uint8 NHWC pixels) -> logits (N, classes).

        Raises:
            InputMismatchError: the dtype or shape is not what the model takes.
        """
        batch = np.asarray(batch)
        if batch.dtype != self.input_dtype:
            raise InputMismatchError(
                f"{self.runtime}: the model takes {self.input_dtype} input, not {batch.dtype}; preprocess images "
                "with edgetl.runtime.preprocess (model_input / preprocess_file) under the bundle's preprocess.json."
            )
        if self.input_shape and (
            batch.ndim != len(self.input_shape)
            or any(want is not None and got != want for got, want in zip(batch.shape, self.input_shape, strict=True))
        ):
            wanted = "(" + ", ".join("N" if d is None else str(d) for d in self.input_shape) + ")"
            hint = (
                " (a batch-1 model: export with export.dynamic_batch: true for batches)" if self.max_batch == 1 else ""
            )
            raise InputMismatchError(
                f"{self.runtime}: the model takes input of shape {wanted}, not {tuple(batch.shape)}{hint}."
            )
        return self._infer(np.ascontiguousarray(batch))

    @abc.abstractmethod
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        """Run a checked, C-contiguous batch; return the logits."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release backend resources."""
