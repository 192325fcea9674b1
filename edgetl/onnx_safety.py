"""Build-side name of :mod:`edgetl.runtime.onnx_safety` (the check lives in the runtime, which loads ONNX too)."""

from edgetl.runtime.onnx_safety import UntrustedFileError, check_onnx_file, external_data_files

__all__ = ["UntrustedFileError", "check_onnx_file", "external_data_files"]
