"""report.json follows its JSON Schema; report.md and the self-contained report.html hold every section."""

import copy
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from PIL import Image

from edgetl.report import SCHEMA_VERSION, markdown, report_schema, validate_report, write_report
from edgetl.report_html import html_report


def test_schema_file_matches_the_code_version():
    schema = report_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION


def test_every_report_written_in_the_tests_validates(tiny_run):
    _, run, report, _, _ = tiny_run
    validate_report(report)
    # The file on disk too (stage tests may have re-run bench on a subset of targets since).
    from edgetl.files import read_json

    validate_report(read_json(run.root / "report.json"))


def test_schema_rejects_a_report_missing_a_section(tiny_run):
    report = copy.deepcopy(tiny_run[2])
    del report["artifacts"][0]["end_to_end_ms"]
    with pytest.raises(jsonschema.ValidationError, match="end_to_end_ms"):
        validate_report(report)
    report = copy.deepcopy(tiny_run[2])
    report["artifacts"][0]["metrics"]["accuracy"] = 1.5
    with pytest.raises(jsonschema.ValidationError):
        validate_report(report)


def _with_slices_and_disagreement(report: dict, image: Path) -> dict:
    """The tiny run has no slices and rarely a disagreement; add both so every section renders."""
    report = copy.deepcopy(report)
    a = report["artifacts"][-1]
    a["disagreements"] = [{"path": str(image), "label": "crack", "prediction": "good", "fp32": "crack"}]
    section = {**a["metrics"], "gap_to_rest": 0.1, "flagged": True}
    for holder in (report["model"]["reference"], *report["artifacts"]):
        holder["slices"] = {"mono": {**section, "flagged": False, "gap_to_rest": -0.1}, "poly": section}
    report["bench"]["deadline_ms"] = 1.0
    return report


def test_markdown_and_html_have_every_section(tiny_run, tmp_path: Path):
    _, _, report, images, _ = tiny_run
    image = next((images / "crack").iterdir())
    full = _with_slices_and_disagreement(report, image)
    validate_report(full)
    md = markdown(full)
    for heading in ("## Latency", "## Defect detection", "## Per slice", "## Against FP32 PyTorch", image.name):
        assert heading in md
    assert "worse than the rest" in md
    page = html_report(full)
    assert page.count("data:image/png;base64,") >= 5  # 4 charts + 1 thumbnail
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "the page must not load anything"
    write_report(tmp_path, {k: v for k, v in full.items() if k != "schema_version"})
    assert {p.name for p in tmp_path.iterdir()} >= {"report.json", "report.md", "report.html"}


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (apt-get install chromium)")
def test_html_renders_in_headless_chromium(tiny_run, tmp_path: Path):
    _, _, report, images, _ = tiny_run
    page = tmp_path / "report.html"
    page.write_text(html_report(_with_slices_and_disagreement(report, next((images / "crack").iterdir()))))
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            str(_chromium()),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            "--window-size=1280,3000",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 20_000
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.std() > 10, "the screenshot is nearly blank"
    assert (pixels < 128).mean() > 0.01, "hardly any dark pixels: text and charts did not render"
