import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from edgetl.cli import app

runner = CliRunner()


def test_help_does_not_import_heavy_backends():
    code = (
        "import sys\n"
        "from edgetl.cli import app\n"
        "try:\n"
        "    app(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('torch', 'onnxruntime', 'openvino', 'tensorrt', 'nncf', 'onnx') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


def test_build_without_data_explains(tmp_path: Path):
    result = runner.invoke(app, ["build", "--target", "cpu"])
    assert result.exit_code == 2
    assert "--data" in result.output


def test_build_with_missing_folder_names_it(tmp_path: Path):
    missing = tmp_path / "nowhere"
    result = runner.invoke(app, ["build", "--data", str(missing), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "nowhere" in result.output and "does not exist" in result.output


def test_unknown_target_is_a_clear_error(image_folder: Path, tmp_path: Path):
    result = runner.invoke(
        app, ["build", "--data", str(image_folder), "--target", "tpu", "--runs-dir", str(tmp_path / "r")]
    )
    assert result.exit_code == 2
    assert "unknown target 'tpu'" in result.output


def test_targets_lists_profiles():
    result = runner.invoke(app, ["targets"])
    assert result.exit_code == 0
    assert "cpu (aliases: onnxruntime" in result.output and "intel-cpu" in result.output


def test_stage_command_on_a_missing_run(tmp_path: Path):
    result = runner.invoke(app, ["train", str(tmp_path / "runs" / "x")])
    assert result.exit_code == 2
    assert "config.yaml is missing" in result.output
