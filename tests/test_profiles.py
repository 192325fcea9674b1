import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edgetl.config import ConfigError
from edgetl.targets.profiles import available_profiles, resolve_profile

ROOT = Path(__file__).parents[1]


def test_builtin_profiles_and_aliases():
    profiles = available_profiles()
    assert {"cpu", "intel-cpu"} <= set(profiles)
    assert resolve_profile("onnxruntime").name == "cpu"
    assert resolve_profile("openvino").name == "intel-cpu"
    assert resolve_profile("cpu").quantization.activations == "uint8"


def test_unknown_target_lists_the_known_ones():
    with pytest.raises(ConfigError, match="intel-cpu"):
        resolve_profile("jetsonn")


def test_profile_from_yaml_path_rejects_unknown_keys(tmp_path: Path):
    good = tmp_path / "mine.yaml"
    good.write_text("backend: onnxruntime\nprecisions: [fp32]\n")
    assert resolve_profile(str(good)).precisions == ["fp32"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("backend: onnxruntime\nworkspace_gb: 4\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        resolve_profile(str(bad))


def test_wheel_carries_profiles_and_recipes(tmp_path: Path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    wheel = next(tmp_path.glob("edgetl-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "edgetl/_profiles/cpu.yaml" in names
    assert "edgetl/_profiles/intel-cpu.yaml" in names
    assert "edgetl/_calibration/README.md" in names
