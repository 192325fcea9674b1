"""The report's charts (matplotlib figures, no pyplot state). None of them exaggerates: accuracy axes span at least
0.1 and show 95 % intervals as error bars, and a difference inside the intervals is labelled as no difference."""

from __future__ import annotations

from typing import Any

from edgetl.bench.host import is_busy
from edgetl.report_rows import artifact_name

MARKERS = {"fp32": "o", "fp16": "s", "int8": "^", "bf16": "D"}


def _floor(values: list[float], *, span: float = 0.1) -> float:
    """Lower end of an accuracy axis ending at 1: below every value, at least ``span`` wide."""
    return max(0.0, min([*values, 1.0 - span]) - 0.02)


def accuracy_latency(report: dict[str, Any]) -> Any:
    """Balanced accuracy (95 % interval) against compute p50 (block range) for every artifact; FP32 PyTorch as a
    band. An artifact whose interval holds the reference's figure and the other way round is labelled '= FP32'."""
    from matplotlib.figure import Figure

    from edgetl.bench.intervals import overlaps

    fig = Figure(figsize=(10, 4.4))
    ax = fig.subplots()
    ref_metrics = report["model"].get("test_metrics", {})
    ref = ref_metrics.get("balanced_accuracy")
    ref_interval = ref_metrics.get("intervals", {}).get("balanced_accuracy")
    lows = []
    for a in report["artifacts"]:
        y = a["metrics"]["balanced_accuracy"]
        low, high = a["metrics"].get("intervals", {}).get("balanced_accuracy", [y, y])
        lows.append(low)
        x = a["latency_ms"]["p50"]
        spread = (a["latency_ms"].get("spread") or {}).get("p50")
        xerr = [[x - spread["min"]], [spread["max"] - x]] if spread else None
        busy = is_busy(a)
        label = artifact_name(a)
        if ref is not None and ref_interval and overlaps([low, high], y, ref_interval, ref):
            label += " (= FP32 within intervals)"
        if busy:
            label += " (latency unreliable: host busy)"
        ax.errorbar(
            [x], [y], yerr=[[y - low], [high - y]], xerr=xerr, fmt=MARKERS.get(a["precision"], "o"), markersize=7,
            capsize=4, label=label, mfc="none" if busy else None,
        )  # fmt: skip
    if ref is not None:
        ax.axhline(ref, color="grey", linestyle="--", linewidth=1, label="PyTorch FP32")
        if ref_interval:
            ax.axhspan(ref_interval[0], ref_interval[1], color="grey", alpha=0.12, label="PyTorch FP32 95 % interval")
            lows.append(ref_interval[0])
    ax.set_ylim(_floor([*lows, ref if ref is not None else 1.0]), 1.0)
    ax.set_xlabel("compute latency p50 (ms, batch 1; bars: range of the blocks)")
    ax.set_ylabel("balanced accuracy (test, 95 % interval)")
    ax.set_xlim(left=0)
    ax.set_title("Accuracy versus latency (overlapping intervals: no measurable difference)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return fig


def latency_distribution(report: dict[str, Any]) -> Any:
    """Box plots of the per-call times: compute and end to end, per artifact; the deadline as a line."""
    from matplotlib.figure import Figure

    names = [artifact_name(a) + (" (busy host)" if is_busy(a) else "") for a in report["artifacts"]]
    fig = Figure(figsize=(10, 0.5 * len(names) + 2))
    axes = fig.subplots(1, 2, sharey=True)
    deadline = report["bench"].get("deadline_ms")
    for ax, key, title in zip(axes, ("latency_ms", "end_to_end_ms"), ("compute", "end to end"), strict=True):
        samples = [a[key]["samples_ms"] for a in report["artifacts"]]
        ax.boxplot(samples, orientation="horizontal", tick_labels=names, showfliers=True, flierprops={"markersize": 2})
        if deadline:
            ax.axvline(deadline, color="#b42318", linestyle=":", label=f"deadline {deadline} ms")
            ax.legend(fontsize=7)
        ax.set_xlim(left=0)
        ax.set_xlabel("ms per image (batch 1)")
        ax.set_title(f"Latency distribution: {title}")
        ax.grid(alpha=0.3, axis="x")
    return fig


def confusion(report: dict[str, Any]) -> Any:
    """Confusion matrices (test split) of PyTorch FP32 and every artifact."""
    from matplotlib.figure import Figure

    classes = report["model"]["classes"]
    panels = [("pytorch fp32", report["model"]["test_metrics"]["confusion_matrix"])]
    panels += [(artifact_name(a), a["metrics"]["confusion_matrix"]) for a in report["artifacts"]]
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(3.4 * cols, 3.1 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax, (name, matrix) in zip(axes.flat, panels, strict=False):
        ax.imshow(matrix, cmap="Blues")
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                ax.text(j, i, str(count), ha="center", va="center", fontsize=9)
        ax.set_xticks(range(len(classes)), classes, fontsize=7, rotation=30)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        ax.set_title(name, fontsize=9)
    fig.tight_layout()
    return fig


def slices(report: dict[str, Any]) -> Any:
    """Balanced accuracy per slice with its 95 % interval, one marker per model (flagged slices hollow and red).

    Points with error bars rather than bars: the axis starts at a floor, and a bar's length would exaggerate.
    """
    import numpy as np
    from matplotlib.figure import Figure

    models = [("pytorch fp32", report["model"]["reference"]["slices"])]
    models += [(artifact_name(a), a["slices"]) for a in report["artifacts"]]
    names = sorted(models[0][1])
    fig = Figure(figsize=(max(6, 1.2 * len(models) * len(names) / 2 + 3), 3.8))
    ax = fig.subplots()
    width = 0.8 / len(models)
    x = np.arange(len(names))
    lows = []
    for k, (name, per) in enumerate(models):
        for i, s in enumerate(names):
            m = per.get(s)
            if not m:
                continue
            y = m["balanced_accuracy"]
            low, high = m.get("intervals", {}).get("balanced_accuracy", [y, y])
            lows.append(low)
            flagged = m.get("flagged")
            ax.errorbar(
                [x[i] + k * width], [y], yerr=[[y - low], [high - y]], fmt="o", color=f"C{k % 10}", capsize=3,
                markersize=6, mfc="none" if flagged else None, mec="#b42318" if flagged else None,
                label=name if i == 0 else None,
            )  # fmt: skip
    ax.set_xticks(x + 0.4 - width / 2, names)
    ax.set_ylabel("balanced accuracy (test, 95 % interval)")
    ax.set_ylim(_floor(lows), 1.0)
    ax.set_title("Per slice (hollow red: flagged worse than the rest)")
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    ax.grid(alpha=0.3, axis="y")
    return fig


def training(report: dict[str, Any]) -> Any:
    """Loss and accuracy per epoch of the final fit (train/history.csv), the kept epoch marked."""
    from matplotlib.figure import Figure

    history = report["model"]["history"]
    epochs = history["epoch"]
    fig = Figure(figsize=(10, 3.6))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        if key in history:
            ax_loss.plot(epochs, history[key], marker="o", markersize=3, label=label)
    accuracies = []
    for key, label in (
        ("train_accuracy", "train accuracy"),
        ("val_accuracy", "validation accuracy"),
        ("val_balanced_accuracy", "validation balanced accuracy"),
    ):
        if key in history:
            ax_acc.plot(epochs, history[key], marker="o", markersize=3, label=label)
            accuracies += history[key]
    from matplotlib.ticker import MaxNLocator

    best = report["model"].get("best_epoch")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if best is not None:
            ax.axvline(best, color="grey", linestyle=":", label=f"kept epoch {best}")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("Loss")
    ax_acc.set_ylim(_floor(accuracies or [1.0], span=0.2), 1.0)
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_title("Accuracy")
    fig.tight_layout()
    return fig


def tradeoff(report: dict[str, Any]) -> Any:
    """Defect recall against false-reject rate on the test split for every model; each tuned threshold marked.

    Left: the whole curve; right: the low false-reject range a line works in.
    """
    from matplotlib.figure import Figure

    models = [("pytorch fp32", report["model"].get("reference", {}))]
    models += [(artifact_name(a), a) for a in report["artifacts"]]
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    chosen_fr = []
    for k, (name, section) in enumerate(models):
        curve = section.get("tradeoff")
        binary = section.get("metrics", {}).get("binary") or {}
        if not curve:
            continue
        color = f"C{k % 10}"
        style = "--" if name == "pytorch fp32" else "-"
        for ax in axes:
            ax.step(curve["false_reject"], curve["defect_recall"], where="post", color=color, linestyle=style,
                    linewidth=1.2, label=name)  # fmt: skip
            if binary.get("false_reject") is not None:
                ax.plot([binary["false_reject"]], [binary["defect_recall"]], "o", color=color, markersize=7,
                        markeredgecolor="black")  # fmt: skip
        if binary.get("false_reject") is not None:
            chosen_fr.append(binary["false_reject"])
    budget = report["bench"].get("max_false_reject")
    zoom = max(0.1, 2 * max(chosen_fr, default=0.0), 2 * (budget or 0.0))
    for ax, right, title in ((axes[0], 1.0, "whole curve"), (axes[1], zoom, "low false-reject range")):
        if budget:
            ax.axvline(budget, color="#b42318", linestyle=":", linewidth=1, label=f"tuning budget {100 * budget:g} %")
        ax.set_xlim(0, right)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("false-reject rate (good parts rejected, test)")
        ax.set_ylabel("defect recall (defective parts rejected, test)")
        ax.set_title(f"Threshold trade-off: {title} (dots: tuned thresholds)", fontsize=9)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def transfer_study(report: dict[str, Any]) -> Any:
    """The pretrained-versus-scratch learning curves (edgetl study transfer)."""
    from edgetl.transfer.study import study_figure

    return study_figure(report["transfer"]["study"])


CHARTS = {
    "accuracy_latency": accuracy_latency,
    "latency_distribution": latency_distribution,
    "confusion": confusion,
    "slices": slices,
    "training": training,
    "tradeoff": tradeoff,
    "transfer_study": transfer_study,
}
