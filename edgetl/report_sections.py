"""The report's sections, in order, as plain blocks (text, lists, tables, charts): report.md and report.html render
the same list, so both carry the same content. Each section has an id (the HTML element id, and an anchor in the
Markdown)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgetl import report_rows as rows


@dataclass(frozen=True)
class Text:
    """A paragraph."""

    text: str


@dataclass(frozen=True)
class Items:
    """A bullet list; ``flag`` marks warnings."""

    items: list[str]
    flag: bool = False


@dataclass(frozen=True)
class Table:
    """A table with a header row."""

    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Chart:
    """A chart of report_charts (drawn in HTML; Markdown links ``link`` when given, else names the chart)."""

    name: str
    alt: str
    link: str | None = None


@dataclass(frozen=True)
class Sub:
    """A sub-heading."""

    title: str


@dataclass(frozen=True)
class Grid:
    """Small titled tables side by side (HTML) or one after the other (Markdown)."""

    tables: list[tuple[str, Table]]


@dataclass(frozen=True)
class Gallery:
    """Thumbnails (HTML) or the list (Markdown) of the test images where an artifact disagrees with FP32."""


Block = Text | Items | Table | Chart | Sub | Grid | Gallery


@dataclass
class Section:
    """One section of the report."""

    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)


def verdict(report: dict[str, Any]) -> Section:
    """The acceptance verdict per artifact and the recommendation per target."""
    section = report.get("acceptance") or {}
    blocks: list[Block] = [Text(rows.acceptance_note(report))]
    if section.get("artifacts"):
        blocks.append(Table(rows.verdict_header(report), rows.verdict_rows(report)))
    lines = rows.recommendation_lines(report)
    if lines:
        blocks.append(Items(lines, flag=section.get("accepted") is False))
    return Section("verdict", "Verdict", blocks)


def summary(report: dict[str, Any]) -> Section:
    """Headline figures of every artifact with intervals, and the accuracy-versus-latency chart."""
    blocks: list[Block] = [
        Text(
            "Figures are on the test split, read once for this report; [a, b] is a 95 % interval (Wilson for "
            "shares, counting shots of one part as one; a bootstrap over parts for balanced accuracy). Latency: "
            "the run's percentile with the range of its blocks' percentiles in brackets."
        ),
        Table(rows.HEADER, rows.artifact_rows(report)),
    ]
    if report["artifacts"]:
        blocks.append(Chart("accuracy_latency", "balanced accuracy against compute latency, with intervals"))
    return Section("summary", "Summary (test split, 95 % intervals)", blocks)


def data(report: dict[str, Any]) -> Section:
    """Data set, split counts and groups, the model, warnings."""
    ds = report["dataset"]
    blocks: list[Block] = [
        Items(rows.data_lines(report) + rows.model_lines(report)),
        Table(rows.split_header(report), rows.split_rows(report)),
    ]
    if ds.get("warnings"):
        blocks += [Sub("Warnings"), Items(list(ds["warnings"]), flag=True)]
    return Section("data", "Data", blocks)


def per_class(report: dict[str, Any]) -> Section:
    """Precision, recall and F1 per class."""
    return Section(
        "per-class",
        "Per class (test split)",
        [
            Text("Recall and precision carry 95 % intervals (Wilson on the group-adjusted count); F1 combines both."),
            Table(rows.PER_CLASS_HEADER, rows.per_class_rows(report)),
        ],
    )


def confusion(report: dict[str, Any]) -> Section:
    """Confusion matrices of the reference and every artifact."""
    tables = [(name, Table(header, body)) for name, header, body in rows.confusion_tables(report)]
    return Section(
        "confusion",
        "Confusion matrices (test split)",
        [Text("Rows: true class; columns: predicted class."), Chart("confusion", "confusion matrices"), Grid(tables)],
    )


def training(report: dict[str, Any]) -> Section:
    """The final fit's training curves (train/history.csv)."""
    if not report["model"].get("history"):
        return Section("training", "Training", [Text("No train/history.csv in the run: no training curves.")])
    return Section(
        "training",
        "Training",
        [
            Text(
                "Loss and accuracy per epoch of the final fit (train/history.csv); the kept epoch is marked. "
                "Validation figures are on the validation split, not the test split."
            ),
            Chart("training", "training curves", link="train/curves.png"),
            Table(rows.history_header(report), rows.history_rows(report)),
        ],
    )


def search(report: dict[str, Any]) -> Section:
    """The recipe search's trial table (or what the fixed recipe was)."""
    model = report["model"]
    found = model.get("search")
    if not found:
        return Section(
            "search",
            "Recipe search",
            [Text(f"No recipe search: the config fixed the recipe (train.strategy {model.get('strategy')}).")],
        )
    if found.get("skipped"):
        return Section("search", "Recipe search", [Text(str(found["skipped"]))])
    trials = found.get("trials", [])
    completed = sum(t.get("state") == "complete" for t in trials)
    return Section(
        "search",
        "Recipe search",
        [
            Text(
                f"{len(trials)} trials ({completed} completed) in {found.get('seconds')} s (budget "
                f"{found.get('budget_minutes')} min), each scored by {found.get('folds')}-fold group cross-validation "
                "on train+val; the test split is not read. The chosen recipe was refit on the train split up to its "
                f"cross-validated epoch ({found.get('best_epoch')}); train/recipe.yaml reruns it."
            ),
            *(Text(f"Note: {note}") for note in found.get("notes", [])),
            Table(rows.TRIAL_HEADER, rows.trial_rows(report)),
        ],
    )


def ladder(report: dict[str, Any]) -> Section | None:
    """Each INT8 artifact's quantization ladder, where the artifacts record one."""
    tables = rows.ladder_tables(report)
    if not tables:
        return None
    blocks: list[Block] = [
        Text(
            "Every rung the quantization tried for an artifact, as its artifact.json records: the accuracy gate "
            "against FP32 on the validation data (each figure with its 95 % interval; limits in the profile's "
            "quantization.gate) and the cost (batch-1 p50 at compile time, size)."
        )
    ]
    blocks += [Text(line) for line in rows.ladder_outcomes(report)]
    for name, header, body in tables:
        blocks += [Sub(name), Table(header, body)]
    return Section("ladder", "INT8 ladder", blocks)


def latency(report: dict[str, Any]) -> Section:
    """Latency with its spread, the host's state, throughput and memory; the distributions chart."""
    bench = report["bench"]
    if not report["artifacts"]:
        return Section("latency", "Latency", [Text("No artifact was measured on this host.")])
    deadline = bench.get("deadline_ms")
    blocks: list[Block] = [
        Text(
            f"Compute: preprocessed tensor in, logits out, batch 1; {bench.get('iterations')} timed runs after "
            f"{bench.get('warmup')} warm-up runs, cut into {bench.get('blocks', 5)} consecutive blocks: each figure "
            "is the run's percentile with the range of the blocks' percentiles in brackets, the least noise a "
            "comparison must clear. End to end: read and decode an image file, preprocess, infer, softmax. "
            f"Jitter = p99 - p50. Deadline: {f'{deadline} ms' if deadline else 'none set (--deadline-ms)'}. Cold "
            "start = load + first inference in a fresh process. Memory: peak resident set of the measuring process "
            "(growth from loading and running the model in brackets). Host: a fixed reference workload timed "
            "before and after each artifact; when it waited for a CPU a large share of its time "
            f"(bench.busy_wait_share, {100 * bench.get('busy_wait_share', 0.25):.0f} %) the host was busy and that "
            "artifact's latency figures are marked unreliable: measure again on a quiet host."
        ),
        Table(rows.LATENCY_HEADER, rows.latency_rows(report)),
    ]
    busy = [rows.artifact_name(a) for a in report["artifacts"] if rows.is_busy(a)]
    if busy:
        blocks.append(Items([f"unreliable latency (host busy while measuring): {', '.join(busy)}"], flag=True))
    refused = {k: v for k, v in rows.unsupported_batches(report).items() if v}
    if refused:
        blocks.append(
            Text(
                "Batch sizes an artifact refuses (static batch-1 export; export with export.dynamic_batch: true to "
                "measure them): " + "; ".join(f"{k}: {v}" for k, v in refused.items()) + "."
            )
        )
    blocks.append(Chart("latency_distribution", "latency distributions"))
    return Section("latency", "Latency (ms, batch 1)", blocks)


def threshold(report: dict[str, Any]) -> Section:
    """The reject threshold per model and the defect-recall / false-reject trade-off."""
    bench = report["bench"]
    ref = report["model"].get("reference", {})
    if not ref.get("threshold"):
        return Section(
            "threshold",
            "Defect detection",
            [Text("No reject threshold: the model has no good class, or the validation data lack one side.")],
        )
    good = bench.get("good_class")
    return Section(
        "threshold",
        f"Defect detection and the threshold trade-off (good class: {good})",
        [
            Text(
                f"Defect score = 1 - P({good}); a part is rejected when its score reaches the threshold. The "
                f"threshold is tuned for each artifact on the {ref['threshold'].get('tuned_on', 'validation split')} "
                f"so that at most {rows.pct(bench.get('max_false_reject'))} of good parts are rejected, then applied "
                "to the test split; it is stored beside each artifact as threshold.json."
            ),
            Table(rows.BINARY_HEADER, rows.binary_rows(report)),
            Text(
                "The trade-off on the test split: the best defect recall any threshold reaches within each "
                "false-reject budget, read off the test images themselves (so it is the curve's shape, not a promise: "
                "a threshold chosen on these images would overfit them), and where the tuned threshold landed."
            ),
            Table(rows.tradeoff_header(), rows.tradeoff_rows(report)),
            Chart("tradeoff", "defect recall against false-reject rate, the tuned thresholds marked"),
        ],
    )


def slices(report: dict[str, Any]) -> Section:
    """Per-slice figures and bars."""
    bench = report["bench"]
    if not report["model"].get("reference", {}).get("slices"):
        return Section("slices", "Per slice", [Text("No slices: give a slice column in a CSV manifest.")])
    return Section(
        "slices",
        "Per slice (test split)",
        [
            Text(
                f"A slice is flagged when it has at least {bench.get('min_slice_images')} test images and its "
                f"balanced accuracy is more than {bench.get('slice_gap')} below that of all other test images pooled "
                "(gap = rest - slice)."
            ),
            Chart("slices", "balanced accuracy per slice with intervals"),
            Table(rows.SLICE_HEADER, rows.all_slice_rows(report)),
        ],
    )


def agreement(report: dict[str, Any]) -> Section:
    """Each artifact against FP32 PyTorch, and the images where they disagree."""
    if not report["artifacts"]:
        return Section("agreement", "Against FP32 PyTorch", [Text("No artifact was measured on this host.")])
    return Section(
        "agreement",
        "Against FP32 PyTorch (test split)",
        [
            Table(rows.AGREEMENT_HEADER, rows.agreement_rows(report)),
            Sub("Images where an artifact disagrees with FP32 PyTorch"),
            Gallery(),
        ],
    )


def bundles(report: dict[str, Any]) -> list[Section]:
    """One section per TensorRT bundle: host checks and the command for the device."""
    out = []
    for name, b in report.get("bundles", {}).items():
        built = "built here" if b.get("engines_built_here") else "not built here: they are built on the device"
        out.append(
            Section(
                f"bundle-{name}",
                rows.bundle_title(name, b),
                [
                    Text(
                        f"{b['path']}; parity pack of {b['parity_images']} images. Checked on the build host in ONNX "
                        f"Runtime on the test split (INT8 as unfused Q/DQ). TensorRT engines: {built}. On the "
                        f"device: {b['on_device']}"
                    ),
                    Table(rows.BUNDLE_HEADER, rows.bundle_rows(b)),
                ],
            )
        )
    return out


def transfer(report: dict[str, Any]) -> list[Section]:
    """Domain gaps, the AdaBN adaptation and the pretrained-versus-scratch study the run folder holds."""
    from edgetl.transfer.section import STUDY_TITLE
    from edgetl.transfer.section import blocks as transfer_blocks

    out = []
    for i, (title, text, header, table) in enumerate(transfer_blocks(report.get("transfer"))):
        parts: list[Block] = [Text(t) for t in text if t]
        if title == STUDY_TITLE and report["transfer"]["study"].get("fits"):
            parts.append(Chart("transfer_study", "test balanced accuracy against the share of training groups"))
        if header:
            parts.append(Table(header, table))
        out.append(Section(f"transfer-{i}", title, parts))
    return out


def run(report: dict[str, Any]) -> Section:
    """The run's size and what can be rebuilt; host and versions."""
    size = report.get("run_size") or {}
    blocks: list[Block] = []
    if size:
        blocks.append(
            Text(
                f"The run folder holds {size['bytes'] / 1e6:.1f} MB (report files left out), "
                f"{size['rebuildable_bytes'] / 1e6:.1f} MB of it files that can be rebuilt; '{size['clean']}' "
                "removes those (never models, reports, configs or the records that verify them)."
            )
        )
        blocks.append(Table(["part", "MB", "note"], rows.run_size_rows(report)))
    blocks.append(Items(rows.host_lines(report)))
    return Section("run", "Run, host and versions", blocks)


def sections(report: dict[str, Any]) -> list[Section]:
    """Every section of the report, in order."""
    ordered: list[Section | None] = [
        verdict(report),
        summary(report),
        data(report),
        per_class(report),
        confusion(report),
        training(report),
        search(report),
        ladder(report),
        latency(report),
        threshold(report),
        slices(report),
        agreement(report),
        *bundles(report),
        *transfer(report),
        run(report),
    ]
    return [s for s in ordered if s is not None]
