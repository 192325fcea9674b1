"""BF16 for OpenVINO on Intel CPUs: detected from the CPU flags, refused with a reason where the CPU lacks them."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgetl.errors import EdgetlError
from edgetl.runtime import cpu_features
from edgetl.runtime.cpu_features import bf16_support, cpu_flags
from edgetl.targets.profiles import TargetProfile

AVX2_ONLY = {"sse4_2", "avx", "avx2", "fma", "avx512f"}


@pytest.mark.parametrize(
    ("flags", "capabilities", "expected"),
    [
        ({*AVX2_ONLY, "amx_bf16", "amx_tile"}, set(), True),  # Sapphire Rapids and later
        ({*AVX2_ONLY, "avx512_bf16"}, set(), True),  # Cooper Lake, Zen 4
        (AVX2_ONLY, {"FP32", "INT8", "BF16"}, False),  # flags win over a capability list when they are readable
        (AVX2_ONLY, set(), False),
        (set(), {"FP32", "BF16"}, True),  # no readable flags: OpenVINO's word
        (set(), {"FP32", "INT8"}, False),
    ],
)
def test_bf16_is_detected_from_the_cpu_flags(flags, capabilities, expected):
    supported, reason = bf16_support(flags, capabilities)
    assert supported is expected and reason


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(info) == {"fpu", "avx2", "amx_bf16"}
    assert cpu_flags(tmp_path / "missing") == set()


def test_only_openvino_profiles_take_bf16():
    TargetProfile(name="xeon", backend="openvino", precisions=["fp32", "bf16", "int8"])
    with pytest.raises(ValueError, match="bf16"):
        TargetProfile(name="bad", backend="onnxruntime", precisions=["bf16"])


def test_bf16_is_refused_with_the_reason_on_a_cpu_without_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("openvino")
    from edgetl.targets.openvino import OpenVinoTarget

    monkeypatch.setattr(cpu_features, "cpu_flags", lambda cpuinfo=None: set(AVX2_ONLY))
    profile = TargetProfile(name="xeon", backend="openvino", precisions=["fp32", "bf16"])
    with pytest.raises(EdgetlError, match="neither amx_bf16 nor avx512_bf16") as caught:
        OpenVinoTarget().compile(Path("model.onnx"), profile, tmp_path, None, precision="bf16")
    assert caught.value.hint and "fp32" in caught.value.hint
