"""Pydantic configuration: every field described, unknown keys rejected, one place for defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgetl.errors import EdgetlError
from edgetl.paths import PlainName


class StrictModel(BaseModel):
    """Base for every config object: unknown keys are an error, not a silent no-op."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(StrictModel):
    """Where the images are and how they are split."""

    root: Path | None = Field(None, description="ImageFolder root: root/<class>/*.png|jpg|bmp|tif.")
    manifest: Path | None = Field(
        None,
        description="CSV manifest with columns path,label[,split][,group][,slice]; paths relative to it.",
    )
    test_fraction: float = Field(0.25, gt=0, lt=1, description="Share of images held out for the final test.")
    val_fraction: float = Field(0.10, gt=0, lt=1, description="Share of images used for every choice.")
    seed: int = Field(0, description="Seed of the split.")
    min_images_per_class: int = Field(4, ge=1, description="Classes with fewer images are an error.")
    imbalance_warning_ratio: float = Field(3.0, ge=1, description="Warn when largest/smallest class exceeds this.")
    min_image_size: int = Field(16, ge=1, description="Images with a side shorter than this (pixels) are an error.")
    near_duplicate_bits: int = Field(
        4, ge=0, le=64, description="Image pairs whose 256-bit perceptual hashes differ in at most this are one part."
    )
    grouping: Literal["auto", "hash", "none"] = Field(
        "auto",
        description="How images without a group become groups that a split never cuts: auto (near-identical "
        "pixels, and the same part under another exposure found in pretrained features), hash (pixels only), "
        "none (every image on its own).",
    )
    group_pattern: str | None = Field(
        None,
        description="Regular expression searched in each image's path relative to the data root; its first "
        r"capture group names the part (e.g. '(SN\d+)_'). A manifest's group column takes precedence.",
    )
    max_group_size: int = Field(
        16, ge=2, description="Automatic links never grow a group past this many images (named groups may)."
    )
    group_neighbours: int = Field(
        5, ge=1, le=50, description="Automatic grouping: mutual nearest neighbours considered per image."
    )

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if (self.root is None) == (self.manifest is None):
            raise ValueError("give exactly one of data.root (an ImageFolder) or data.manifest (a CSV file)")
        if self.test_fraction + self.val_fraction >= 0.9:
            raise ValueError("data.test_fraction + data.val_fraction must leave at least 10 % for training")
        return self


class ModelConfig(StrictModel):
    """Backbone, pretrained weights and input channels."""

    arch: Literal["mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "resnet18", "efficientnet_b0"] = Field(
        "mobilenet_v2", description="torchvision backbone."
    )
    weights: Path | None = Field(
        None, description="Pretrained weight file; None looks in the torch hub cache and installed packages."
    )
    weights_sha256: str | None = Field(
        None, description="Expected sha256 of a weight file that is not torchvision's own ImageNet file."
    )
    pretrained: bool = Field(True, description="Start from ImageNet weights (False trains from scratch).")
    allow_download: bool = Field(False, description="Allow torchvision to download missing weights.")
    gray: bool | Literal["auto"] = Field(
        "auto",
        description="Fold the first convolution to one input channel (monochrome cameras); auto: when every "
        "training image is greyscale.",
    )
    input_size: int | Literal["auto"] = Field(
        "auto",
        description="Square input side in pixels; auto: chosen by the recipe search (train.strategy auto), else 224.",
    )

    @model_validator(mode="after")
    def _input_size_range(self) -> ModelConfig:
        if self.input_size != "auto" and not 32 <= self.input_size <= 1024:
            raise ValueError("model.input_size must be between 32 and 1024 pixels, or auto")
        return self

    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout before the new classification head.")


class AugmentConfig(StrictModel):
    """Augmentation that respects the physics of the part."""

    hflip: bool = Field(True, description="Horizontal flips are allowed for this part.")
    vflip: bool = Field(True, description="Vertical flips are allowed for this part.")
    rot90: bool = Field(True, description="Quarter turns are allowed for this part.")
    degrees: float = Field(3.0, ge=0, le=45, description="Small rotation range (degrees).")
    translate: float = Field(0.03, ge=0, le=0.3, description="Shift as a share of the side.")
    scale: float = Field(0.05, ge=0, le=0.5, description="Zoom range around 1.")
    brightness: float = Field(0.1, ge=0, le=1, description="Brightness jitter (exposure).")
    contrast: float = Field(0.1, ge=0, le=1, description="Contrast jitter.")
    gamma: float = Field(
        0.25, ge=0, le=1, description="Gamma jitter: gamma drawn log-uniformly in [1 / (1 + g), 1 + g] (0: off)."
    )
    blur: float = Field(
        0.8, ge=0, le=5, description="Largest Gaussian blur sigma in pixels, applied to a third of views."
    )
    noise: float = Field(0.02, ge=0, le=0.2, description="Sensor noise: largest std as a share of full scale (0: off).")

    def scaled(self, strength: float) -> AugmentConfig:
        """The same switches with every range multiplied by ``strength`` (0 turns the ranges off)."""
        if strength == 1.0:
            return self
        ranges = ("degrees", "translate", "scale", "brightness", "contrast", "gamma", "blur", "noise")
        limits = {"degrees": 45.0, "translate": 0.3, "scale": 0.5, "brightness": 1.0, "contrast": 1.0,
                  "gamma": 1.0, "blur": 5.0, "noise": 0.2}  # fmt: skip
        return self.model_copy(update={k: min(getattr(self, k) * strength, limits[k]) for k in ranges})


class SearchConfig(StrictModel):
    """The recipe search that ``train.strategy: auto`` runs: Optuna (TPE) trials scored by group k-fold CV."""

    folds: int = Field(3, ge=2, le=10, description="Group k-fold cross-validation on train+val.")
    epochs: int = Field(
        8, ge=1, description="Schedule length of each trial's fold (shorter than train.epochs: trials rank recipes)."
    )
    max_trials: int = Field(40, ge=1, description="Stop after this many trials (or when the budget is spent).")
    depths: list[int] | None = Field(
        None, description="Trained backbone blocks to try besides linear (0); None: the arch's list."
    )
    full: bool | None = Field(None, description="Also try training every block; None: only on a GPU.")
    input_sizes: list[int] | None = Field(
        None, description="Input sides to try; None: 224 and 288 (160 and 224 for images under 200 pixels)."
    )
    resize: list[Literal["stretch", "letterbox"]] | None = Field(
        None, description="Resize rules to try; None: both when the images are not square, else stretch."
    )
    class_weighting: list[Literal["none", "sqrt", "balanced"]] = Field(
        default_factory=lambda: list[Literal["none", "sqrt", "balanced"]](["none", "sqrt", "balanced"])
    )
    lr: tuple[float, float] = Field((3e-4, 3e-3), description="Head learning-rate range (log-uniform).")
    augment_strength: list[float] = Field(
        default_factory=lambda: [1.0], description="Augmentation strengths to try (each costs its own cache)."
    )
    storage: str | None = Field(None, description="Optuna RDB storage URL shared by several machines; None: in memory.")
    study_name: str | None = Field(None, description="Study name in the storage; None: the run name.")


class TrainConfig(StrictModel):
    """Fine-tuning strategy and optimiser."""

    strategy: Literal["auto", "linear", "partial", "full"] = Field(
        "auto",
        description="linear: head only; partial: last blocks; full: everything; auto: a recipe search scored by "
        "group k-fold cross-validation on train+val (train.search), within train.budget_minutes.",
    )
    budget_minutes: float = Field(
        6.0, gt=0, description="Wall time of the recipe search (caches and trials); the refit comes after."
    )
    search: SearchConfig = Field(default_factory=SearchConfig)
    augment_strength: float = Field(1.0, ge=0, le=3, description="Multiplies every augmentation range.")
    trainable_blocks: int | None = Field(
        None, ge=1, description="Blocks trained by 'partial' (counted from the end); None: the arch default."
    )
    epochs: int = Field(
        12,
        ge=1,
        description="Most epochs (the learning-rate schedule's length); training stops earlier when "
        "the held-out score stops improving.",
    )
    patience: int = Field(3, ge=1, description="Stop after this many epochs without a better held-out score.")
    stop_epoch: int | None = Field(
        None,
        ge=1,
        description="Train exactly this many epochs of the schedule and keep the last (a cross-validated recipe "
        "sets it); None: keep the best epoch on the validation split.",
    )
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0, description="Peak learning rate of the head.")
    backbone_lr_scale: float = Field(0.3, gt=0, le=1, description="LR multiplier for trained backbone blocks.")
    layer_decay: float = Field(0.8, gt=0, le=1, description="'full': LR multiplier per block towards the input.")
    weight_decay: float = Field(1e-4, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    class_weighting: Literal["none", "sqrt", "balanced"] = Field(
        "sqrt", description="Loss weights against class imbalance: none, 1/sqrt(freq) or 1/freq."
    )
    views: int = Field(4, ge=1, description="Augmented views cached per training image (frozen prefix).")
    cache_backend: Literal["onnxruntime", "openvino", "torch"] = Field(
        "onnxruntime", description="Runtime that computes the frozen prefix once per view."
    )
    int8_views: int = Field(
        0,
        ge=0,
        description="Extra cached views computed through an INT8 (QDQ) copy of the frozen prefix, so the trained "
        "blocks learn to tolerate quantization noise (onnxruntime cache backend only).",
    )
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    seed: int = Field(0)
    threads: int | None = Field(None, ge=1, description="CPU threads; None uses every core.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "cpu",
        description="Where the trained blocks run: cpu (bit-reproducible), cuda (an NVIDIA GPU, several times "
        "faster, reproducible up to floating-point order) or auto (cuda when torch sees one).",
    )

    @model_validator(mode="after")
    def _int8_views_need_ort(self) -> TrainConfig:
        if self.int8_views and self.cache_backend != "onnxruntime":
            raise ValueError("int8_views needs cache_backend: onnxruntime (the INT8 prefix runs in ONNX Runtime)")
        return self


class ExportConfig(StrictModel):
    """ONNX export and its parity check."""

    opset: int | None = Field(None, ge=11, le=23, description="None: the lowest opset among the targets.")
    dynamic_batch: bool = Field(
        True,
        description="Export a dynamic batch axis, so throughput is measured at every bench.batch_sizes (false: a "
        "static batch-1 model; TensorRT engines still build for the profile's min/opt/max batch).",
    )
    uint8_input: bool = Field(
        True,
        description="CPU artifacts (ONNX Runtime, OpenVINO) and their bundles take the resized uint8 pixels (NHWC) "
        "and normalise them in the graph, so the line skips host-side float conversion; false: float32 NCHW input. "
        "TensorRT models keep float input (DeepStream and the engines normalise on the GPU).",
    )
    parity_images: int = Field(64, ge=1, description="Real validation images checked against PyTorch.")
    parity_atol: float = Field(1e-4, gt=0, description="Largest allowed |logit difference|.")
    slim: bool = Field(True, description="Simplify the graph with onnxslim.")


class CalibrationConfig(StrictModel):
    """Calibration set for INT8."""

    samples: int = Field(
        300,
        ge=1,
        description="Stratified sample of the training split (all if fewer; at most half of it when the "
        "validation split is too small, so the INT8 gate keeps the rest).",
    )
    method: Literal["minmax", "entropy", "percentile"] | None = Field(
        None, description="None: the target profile's default."
    )
    fp32_blocks: int | None = Field(
        None, ge=0, description="First N backbone blocks kept in floating point; None: the target profile's value."
    )
    bias_correction: int | None = Field(
        None,
        ge=0,
        description="Calibration images for INT8 bias correction (0: off; onnxruntime and tensorrt); "
        "None: the target profile's value.",
    )
    seed: int = Field(0)


class BenchConfig(StrictModel):
    """Latency and accuracy measurement."""

    warmup: int = Field(20, ge=0, description="Untimed runs before measuring.")
    warmup_seconds: float | None = Field(None, gt=0, description="Warm up for this long instead of `warmup` runs.")
    iterations: int = Field(200, ge=1, description="Timed batch-1 runs.")
    blocks: int = Field(
        5,
        ge=1,
        le=50,
        description="Consecutive blocks the timed runs are cut into: every latency figure carries the spread "
        "(min-max) of its blocks' p50 and p99.",
    )
    busy_wait_share: float = Field(
        0.25,
        gt=0,
        lt=1,
        description="Flag the host busy (its latency figures unreliable) when a fixed reference workload, timed "
        "before and after each artifact, waits for a CPU this share of its time or more.",
    )
    duration_s: float | None = Field(None, gt=0, description="Time runs for this long instead of `iterations`.")
    threads: int | None = Field(None, ge=1, description="Threads per runtime; None: every core.")
    deadline_ms: float | None = Field(None, gt=0, description="Line takt: report the share of frames slower.")
    e2e_iterations: int = Field(50, ge=1, description="Timed end-to-end runs (file decode to class).")
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 4, 8, 16], description="Throughput batch sizes.")
    throughput_seconds: float = Field(1.0, gt=0, description="Seconds of calls per throughput batch size.")
    max_false_reject: float = Field(
        0.01, ge=0, lt=1, description="Good parts rejected at most (on validation) when tuning the reject threshold."
    )
    good_class: str | None = Field(None, description="The good-part class; None: guessed by name, else majority.")
    slice_gap: float = Field(
        0.05, ge=0, le=1, description="Flag a slice whose balanced accuracy is this far below the other images'."
    )
    min_slice_images: int = Field(20, ge=1, description="Smaller slices are reported but never flagged.")


class AcceptanceConfig(StrictModel):
    """What the line asks of a model before it is deployed, judged for every artifact on the test split.

    Each criterion is met (with 95 % confidence: the whole interval, or the slowest block, is on the right side),
    met on the point estimate only, or not met. None leaves a criterion out.
    """

    min_class_recall: float | dict[str, float] | None = Field(
        None,
        description="Minimum recall (top-1 class) of each defect class: one share for every class but the good "
        "one, or a mapping class -> share (any class, e.g. {crack: 0.9}).",
    )
    min_defect_recall: float | None = Field(
        None, ge=0, le=1, description="Minimum share of defective test parts rejected at the tuned threshold."
    )
    max_false_reject: float | None = Field(
        None, ge=0, le=1, description="Maximum share of good test parts rejected at the tuned threshold."
    )
    min_balanced_accuracy: float | None = Field(None, ge=0, le=1, description="Minimum test balanced accuracy.")
    max_p99_ms: float | None = Field(
        None, gt=0, description="Deadline on the compute latency p99 (ms, batch 1, preprocessed tensor in)."
    )
    max_e2e_p99_ms: float | None = Field(
        None, gt=0, description="Deadline on the end-to-end latency p99 (ms: read, decode, preprocess, infer)."
    )
    max_size_mb: float | None = Field(None, gt=0, description="Largest model file(s) on disk, MB.")
    max_memory_mb: float | None = Field(
        None, gt=0, description="Largest peak resident memory while loading and running the model, MB."
    )
    require_confidence: bool = Field(
        True,
        description="An artifact passes only when every criterion is met with 95 % confidence; false: the point "
        "estimates suffice (the verdict still tells the two apart).",
    )

    @model_validator(mode="after")
    def _recall_shares(self) -> AcceptanceConfig:
        shares = self.min_class_recall
        values = shares.values() if isinstance(shares, dict) else [] if shares is None else [shares]
        if any(not 0 <= v <= 1 for v in values):
            raise ValueError("acceptance.min_class_recall takes shares between 0 and 1")
        return self

    def criteria_set(self) -> bool:
        """True when at least one criterion is given."""
        return any(v not in (None, {}) for k, v in self.model_dump().items() if k != "require_confidence")


class PreprocessConfig(StrictModel):
    """How images are fitted to the square input (written into the model's preprocessing spec)."""

    resize: Literal["auto", "stretch", "letterbox"] = Field(
        "auto",
        description="stretch or letterbox (keep the aspect ratio, pad); auto: chosen by the recipe search, else "
        "letterbox when the images are not square.",
    )


class BuildConfig(StrictModel):
    """Everything `edgetl build` needs; written resolved to runs/<name>/config.yaml."""

    name: PlainName = Field("default", description="Run name (folder under runs_dir): letters, digits, _ - .")
    runs_dir: Path = Field(Path("runs"), description="Parent folder of run folders.")
    targets: list[str] = Field(default_factory=lambda: ["cpu"], description="Target profiles or aliases.")
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    bench: BenchConfig = Field(default_factory=BenchConfig)
    acceptance: AcceptanceConfig = Field(default_factory=AcceptanceConfig)

    @property
    def run_dir(self) -> Path:
        """The run folder."""
        return self.runs_dir / self.name


class ConfigError(EdgetlError, ValueError):
    """A config file that cannot be used, with the file named in the message."""


def _format_validation(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)


def build_config_from_dict(raw: dict[str, Any], *, source: str = "config") -> BuildConfig:
    """Validate a plain dict into a BuildConfig, with readable errors."""
    try:
        return BuildConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source} is not a valid edgetl config:\n{_format_validation(exc)}") from exc


def set_dotted(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set ``section.key`` values of a raw config mapping in place (and return it)."""
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return raw


def load_build_config(path: Path, *, overrides: dict[str, Any] | None = None) -> BuildConfig:
    """Load a YAML config; relative data paths are resolved against the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass --config with the path of a YAML file.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level (keys: data, model, train, ...).")
    data = raw.get("data")
    if isinstance(data, dict):
        for key in ("root", "manifest"):
            if data.get(key) is not None and not Path(str(data[key])).is_absolute():
                try:
                    data[key] = str((path.parent / str(data[key])).resolve())
                except (OSError, ValueError, RuntimeError) as exc:
                    raise ConfigError(f"{path}: data.{key} is not a usable path ({exc}).") from exc
    return build_config_from_dict(set_dotted(raw, overrides or {}), source=str(path))


def dump_config(config: BuildConfig) -> str:
    """Return the fully resolved config as YAML text."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
