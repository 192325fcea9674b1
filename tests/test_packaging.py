"""`pip install edgetl[onnxruntime]` is a line install: the wheel, a fresh virtual environment, a prediction."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edgetl.runtime import load

ROOT = Path(__file__).resolve().parents[1]
# What pip prints when it cannot reach the package index at all (not: the index has no such version).
UNREACHABLE = (
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "Name or service not known",
    "Could not fetch URL",
    "ConnectionError",
    "timed out",
)
BUILD_SIDE = ("torch", "torchvision", "nncf", "openvino", "scikit-learn", "matplotlib", "onnx", "optuna")


def _run(args: list[str | Path], **kwargs) -> subprocess.CompletedProcess[str]:
    # Neither PYTHONPATH nor the working directory may put the source tree before the installed wheel.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    kwargs.setdefault("cwd", "/")
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, **kwargs)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, ROOT])
    assert built.returncode == 0, built.stderr
    return next(dist.glob("edgetl-*.whl"))


def test_the_wheel_requires_only_the_runtime(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "edgetl/runtime/model.py" in names and "edgetl/_profiles/cpu.yaml" in names
    plain = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    runtime = sorted(r.split(">")[0].split("=")[0] for r in plain if "extra ==" not in r)
    assert runtime == ["numpy", "pillow", "pydantic", "pyyaml", "rich", "typer"]
    assert "onnxruntime>=1.24; extra == 'onnxruntime'" in plain and "openvino>=2024.4; extra == 'openvino'" in plain
    assert any(r.startswith("torch") and "extra == 'build'" in r for r in plain)


@pytest.mark.slow
@pytest.mark.install
def test_a_runtime_only_install_verifies_and_predicts(wheel: Path, tiny_run, tmp_path: Path):
    """The wheel with only [onnxruntime] in a fresh venv (no torch, no onnx): verify and predict the cpu bundle,
    with the same verdicts as the build host's install."""
    venv = tmp_path / "venv"
    created = _run([sys.executable, "-m", "venv", venv])
    assert created.returncode == 0, created.stderr
    python, edgetl = venv / "bin" / "python", venv / "bin" / "edgetl"
    install = _run([python, "-m", "pip", "install", "-q", f"{wheel}[onnxruntime]"], timeout=900)
    if install.returncode != 0 and any(sign in install.stderr for sign in UNREACHABLE):
        pytest.skip(f"the package index cannot be reached from here: {install.stderr.strip().splitlines()[-1]}")
    assert install.returncode == 0, install.stderr
    installed = _run([python, "-m", "pip", "list", "--format=freeze"]).stdout.lower()
    assert "onnxruntime==" in installed
    assert [name for name in BUILD_SIDE if f"\n{name}==" in f"\n{installed}"] == []

    bundle = tiny_run[1].root / "bundle" / "cpu"
    images = tiny_run[3]
    verified = _run([edgetl, "verify", bundle])
    assert verified.returncode == 0, verified.stderr
    assert "parity pack passed" in verified.stdout
    out = tmp_path / "results.csv"
    predicted = _run([edgetl, "predict", bundle, images, "--precision", "int8", "--out", out])
    assert predicted.returncode == 0, predicted.stderr
    rows = list(csv.DictReader(out.read_text().splitlines()))
    with load(bundle, precision="int8") as model:
        expected = model.predict(sorted(images.rglob("*.png")))
    assert [(r["path"], r["class"], r["verdict"]) for r in rows] == [(p.source, p.label, p.verdict) for p in expected]
    code = "import sys, edgetl; from edgetl.runtime import load; print(edgetl.__file__, load(sys.argv[1]).runtime)"
    api = _run([python, "-c", code, bundle])
    assert api.returncode == 0, api.stderr
    where, runtime = api.stdout.split()
    assert str(venv) in where and "site-packages" in where and runtime == "onnxruntime-cpu"
