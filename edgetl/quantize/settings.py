"""How INT8 is made for a target and how it is checked: the ``quantization:`` section of a target profile."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgetl.config import StrictModel

Method = Literal["minmax", "entropy", "percentile"]


class GateSpec(StrictModel):
    """Limits an INT8 artifact must meet against the FP32 model on the validation data (point estimates, but for
    agreement judged at ``agreement_confidence``)."""

    min_agreement: float = Field(0.98, ge=0, le=1, description="Top-1 agreement with FP32, at least.")
    agreement_confidence: float = Field(
        0.8,
        ge=0,
        lt=1,
        description="One-sided confidence at which agreement on all the gate images must reach min_agreement "
        "where the gate screens on the validation split: its Wilson lower bound at this level (0: the point "
        "estimate). A ladder lands on the first rung to pass, so a point estimate at the limit lands rungs whose "
        "agreement is below it. The screen, and a small data set's gate (no screen), use the point estimate.",
    )
    max_balanced_accuracy_drop: float = Field(
        0.02, ge=0, le=1, description="FP32 balanced accuracy minus the artifact's, at most."
    )
    max_defect_recall_drop: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Drop in defect recall at the false-reject budget (bench.max_false_reject), at most; "
        "the good class against all the others.",
    )
    min_tail_images: int = Field(
        5,
        ge=1,
        description="Good images that must score above the threshold the defect-recall drop is read at. A "
        "threshold set by the top one or two good scores moves with any small change of score, so with too few "
        "good gate images for the budget the drop is read at the smallest false-reject rate that leaves this many "
        "above it (recorded as the figure's read_at).",
    )
    max_images: int = Field(
        1000,
        ge=1,
        description="Images the gate scores, at most: the validation split, then training images outside the "
        "calibration set (read for a candidate that passes on the validation split, or for every candidate when "
        "that split is too small to trust on its own: dataset.json's validation.adequate).",
    )


class CalibrationRecipe(StrictModel):
    """One calibration rung of the ladder."""

    method: Method = Field(description="Calibration method.")
    per_channel: bool = Field(True, description="Per-channel weights.")


def _default_recipes() -> list[CalibrationRecipe]:
    return [
        CalibrationRecipe(method="percentile", per_channel=True),
        CalibrationRecipe(method="entropy", per_channel=True),
        CalibrationRecipe(method="minmax", per_channel=False),
    ]


class LadderSpec(StrictModel):
    """What to try, in order, when the profile's INT8 recipe fails its gate."""

    enabled: bool = Field(True, description="Climb the ladder when the gate fails (false: keep the failing INT8).")
    recipes: list[CalibrationRecipe] = Field(
        default_factory=_default_recipes,
        description="Calibration rungs after the profile's own recipe (ONNX Runtime and TensorRT layouts; "
        "OpenVINO takes NNCF's ranges). When the profile corrects biases, each is tried without the correction "
        "first, then with it.",
    )
    max_float_groups: int = Field(
        4,
        ge=0,
        description="Most sensitive groups (backbone blocks or the head) kept in floating point, added one at a "
        "time in the order of their measured sensitivity.",
    )
    max_latency_ratio: float | None = Field(
        1.0,
        gt=0,
        description="A mixed-precision rung must run faster than FP32 times this (batch-1 p50 at compile time, "
        "timed against FP32 in alternating blocks); None: no latency cap.",
    )
    sensitivity_images: int = Field(64, ge=1, description="Gate images the per-group sensitivity is measured on.")
    bf16: bool = Field(
        True,
        description="OpenVINO: before FP16 weights, try the FP32 IR run in bf16 (gated, and under the latency cap) "
        "where the build host's CPU runs BF16 natively (AMX or AVX512-BF16); on a CPU without it the line runs "
        "that artifact in f32.",
    )


class QuantizationSpec(StrictModel):
    """How INT8 is made for this target."""

    method: Method = Field("minmax", description="Calibration method.")
    activations: Literal["uint8", "int8"] = Field(
        "uint8", description="Activation type: uint8 is the fast path on x86 CPUs; TensorRT needs int8."
    )
    symmetric_activations: bool = Field(False, description="Zero point 0 for activations.")
    per_channel: bool = Field(True, description="Per-channel symmetric weights.")
    reduce_range: bool = Field(
        False,
        description="7-bit weights: x86 CPUs without VNNI add u8 x s8 products in saturating 16-bit pairs; "
        "7-bit weights cannot saturate there.",
    )
    percentile: float = Field(99.999, gt=90, le=100, description="Percentile for the percentile method.")
    moving_average: bool = Field(
        False,
        description="minmax: average each image's activation range instead of taking the extremes over the "
        "calibration set, so one outlier image does not stretch the int8 grid (onnxruntime and tensorrt).",
    )
    fp32_blocks: int = Field(
        0, ge=0, description="Keep the first N backbone blocks (the stem) in floating point: mixed precision."
    )
    bias_correction: int = Field(
        0,
        ge=0,
        description="Empirical bias correction on this many calibration images, layer by layer (0: off); "
        "onnxruntime and tensorrt. OpenVINO INT8 gets NNCF's own bias correction.",
    )
    preset: Literal["performance", "mixed"] = Field(
        "performance", description="NNCF preset: performance (symmetric) or mixed (asymmetric activations)."
    )
    gate: GateSpec = Field(default_factory=lambda: GateSpec(), description="Accuracy gate of every INT8 artifact.")
    ladder: LadderSpec = Field(default_factory=lambda: LadderSpec(), description="Fallbacks when the gate fails.")
