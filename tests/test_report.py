"""report.json follows its JSON Schema; report.md and the self-contained report.html hold every section."""

import copy
import html
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from PIL import Image

from edgetl.bench.acceptance import judge_report
from edgetl.config import AcceptanceConfig
from edgetl.report import SCHEMA_VERSION, markdown, report_schema, validate_report, write_report
from edgetl.report_html import html_report

# Every section of report.html and report.md, by id (the INT8 ladder only where an artifact records one).
SECTION_IDS = (
    "verdict",
    "summary",
    "data",
    "per-class",
    "confusion",
    "training",
    "search",
    "ladder",
    "latency",
    "threshold",
    "slices",
    "agreement",
    "run",
)


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
    """The tiny run has no slices, no INT8 ladder, no criteria and rarely a disagreement; add them all so every
    section renders."""
    report = copy.deepcopy(report)
    a = report["artifacts"][-1]
    a["disagreements"] = [{"path": str(image), "label": "crack", "prediction": "good", "fp32": "crack"}]
    section = {**a["metrics"], "gap_to_rest": 0.1, "flagged": True}
    for holder in (report["model"]["reference"], *report["artifacts"]):
        holder["slices"] = {"mono": {**section, "flagged": False, "gap_to_rest": -0.1}, "poly": section}
    report["bench"]["deadline_ms"] = 1.0
    int8 = next(x for x in report["artifacts"] if x["precision"] == "int8")
    int8["details"]["ladder"] = [
        {"rung": "minmax, per-channel", "agreement": 0.91, "passed": False},
        {"rung": "stem in FP32", "agreement": 0.97, "passed": True, "chosen": True},
    ]
    criteria = AcceptanceConfig(min_class_recall=0.5, min_defect_recall=0.2, max_p99_ms=1000, max_size_mb=50)
    report["acceptance"] = judge_report(report, criteria)
    return report


def test_markdown_and_html_have_every_section(tiny_run, tmp_path: Path):
    _, _, report, images, _ = tiny_run
    image = next((images / "crack").iterdir())
    full = _with_slices_and_disagreement(report, image)
    validate_report(full)
    md = markdown(full)
    page = html_report(full)
    for section in SECTION_IDS:
        assert f'<a id="{section}"></a>' in md, section
        assert f"<section id='{section}'>" in page, section
    # The verdict comes first, in both.
    assert md.index('id="verdict"') < md.index('id="summary"') and page.index("id='verdict'") < page.index("id='data'")
    expected = ("recall of crack >= 0.500", "compute p99 <= 1000 ms", "worse than the rest", image.name, "stem in FP32")
    for text in expected:
        assert text in md and html.escape(text) in page, text
    assert "{'" not in md and "{'" not in page, "a raw Python dict in the report"
    assert "train/curves.png" in md  # the training curves: linked from Markdown, drawn in HTML
    charts = ("accuracy_latency", "confusion", "training", "latency_distribution", "tradeoff", "slices")
    for chart in charts:
        assert f'id="chart-{chart}"' in page, chart
    assert page.count("data:image/png;base64,") >= len(charts) + 1  # the charts + 1 thumbnail
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "the page must not load anything"
    write_report(tmp_path, {k: v for k, v in full.items() if k != "schema_version"})
    assert {p.name for p in tmp_path.iterdir()} >= {"report.json", "report.md", "report.html"}


def test_the_report_states_the_run_size_and_what_can_be_rebuilt(tiny_run):
    _, run, report, _, _ = tiny_run
    size = report["run_size"]
    assert size["bytes"] > size["rebuildable_bytes"] > 0
    expected = {"bench/reference_logits.npz", "calibration/calib.npy"}
    if (run.calibration / "histograms.npz").is_file():  # when the INT8 ladder reached entropy or percentile ranges
        expected.add("calibration/histograms.npz")
    assert {f["path"] for f in size["rebuildable"]} == expected
    assert f"holds {size['bytes'] / 1e6:.1f} MB" in markdown(report)


def test_the_accuracy_axis_does_not_exaggerate_a_one_image_difference(tiny_run):
    from edgetl.report_charts import accuracy_latency

    report = copy.deepcopy(tiny_run[2])
    for a in report["artifacts"]:  # every artifact within one image of perfect, tight intervals
        a["metrics"]["balanced_accuracy"] = 0.99
        a["metrics"]["intervals"]["balanced_accuracy"] = [0.985, 0.995]
    report["model"]["test_metrics"]["balanced_accuracy"] = 1.0
    report["model"]["test_metrics"]["intervals"]["balanced_accuracy"] = [0.99, 1.0]
    low, high = accuracy_latency(report).axes[0].get_ylim()
    assert high - low >= 0.1


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (apt-get install chromium)")
def test_html_renders_in_headless_chromium(tiny_run, tmp_path: Path):
    _, _, report, images, _ = tiny_run
    page = tmp_path / "report.html"
    page.write_text(html_report(_with_slices_and_disagreement(report, next((images / "crack").iterdir()))))
    shot = tmp_path / "shot.png"
    chromium = [str(_chromium()), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--hide-scrollbars"]  # fmt: skip
    dom = subprocess.run([*chromium, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered = set(re.findall(r'<section id="([^"]+)"', dom.stdout))
    assert set(SECTION_IDS) <= rendered, f"sections missing from the rendered page: {set(SECTION_IDS) - rendered}"
    assert re.findall(r'<section id="([^"]+)"', dom.stdout)[0] == "verdict"
    subprocess.run(
        [*chromium, f"--screenshot={shot}", "--window-size=1280,9000", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 20_000
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.std() > 10, "the screenshot is nearly blank"
    assert (pixels < 128).mean() > 0.01, "hardly any dark pixels: text and charts did not render"


def test_the_report_modules_form_no_cycle():
    import ast

    root = Path(__file__).parents[1] / "edgetl"
    for name in ("report_rows", "report_sections", "report_md", "report_html", "report_charts"):
        tree = ast.parse((root / f"{name}.py").read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert "edgetl.report" not in imported, f"{name} imports edgetl.report: the cycle is back"


def test_an_int8_artifact_that_fell_through_to_a_float_rung_is_named_so():
    from edgetl.report_rows import artifact_name

    fell = {"target": "cpu", "precision": "int8", "details": {"ladder": {"kind": "fp32"}}}
    assert artifact_name(fell) == "cpu int8 (fp32 model)"
    calibrated = {"target": "cpu", "precision": "int8", "details": {"ladder": {"kind": "calibration"}}}
    assert artifact_name(calibrated) == "cpu int8" == artifact_name({"target": "cpu", "precision": "int8"})
