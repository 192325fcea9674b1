"""The recipe search behind ``train.strategy: auto``: Optuna trials scored by group k-fold cross-validation.

Every trial is a recipe (how many blocks to train, input side, resize rule, class weighting, learning rate,
augmentation strength) trained on k-1 folds of train+val (a ``train.search.epochs`` schedule) and scored on the
held-out fold; folds are group-aware and stratified, so one part never sits on both sides. A trial's score is the
mean held-out balanced accuracy at the epoch where the fold-mean curve peaks (where the refit stops when the
validation split is too small to stop it). The default recipe is the first trial and always completes; the others
run until ``train.budget_minutes`` is spent (TPE sampler, a median pruner after each fold). The test split is
never read here.

A search that the budget cannot pay for twice compares nothing: when the validation split can stop the refit on its
own, the default recipe's cost on this host is measured first (its cache, then a few timed batches) and, if two
trials would not fit, no trial runs; the build trains the default recipe once and says why.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edgetl.config import TrainConfig
from edgetl.fit import InputCache, fit, seconds_per_image
from edgetl.models import ARCHS, Classifier

_PRUNE_AFTER = 1  # completed trials before the median pruner may stop one (the default recipe is the first)


@dataclass(frozen=True)
class Recipe:
    """The choices a trial makes; ``trainable_blocks`` 0 is linear, the arch's block count is full."""

    trainable_blocks: int
    input_size: int
    resize: str
    class_weighting: str
    lr: float
    augment_strength: float

    def start(self, arch: str) -> int:
        """Index of the first trained block."""
        return ARCHS[arch].num_blocks - self.trainable_blocks

    def strategy(self, arch: str) -> str:
        if self.trainable_blocks == 0:
            return "linear"
        return "full" if self.trainable_blocks >= ARCHS[arch].num_blocks else "partial"

    def overrides(self, arch: str, *, stop_epoch: int | None) -> dict[str, Any]:
        """Config keys (dotted) that rerun this recipe without a search."""
        strategy = self.strategy(arch)
        return {
            "train.strategy": strategy,
            "train.trainable_blocks": self.trainable_blocks if strategy == "partial" else None,
            "model.input_size": self.input_size,
            "preprocess.resize": self.resize,
            "train.class_weighting": self.class_weighting,
            "train.lr": float(f"{self.lr:.4g}"),
            "train.augment_strength": self.augment_strength,
            "train.stop_epoch": stop_epoch,
        }


@dataclass
class SearchSpace:
    """The choices open to trials, and the default recipe tried first."""

    depths: list[int]
    input_sizes: list[int]
    resize: list[str]
    class_weighting: list[str]
    lr: tuple[float, float]
    augment_strength: list[float]
    default: Recipe


@dataclass
class SearchResult:
    """The winning recipe, its cross-validated score, every trial, and the winner's out-of-fold logits."""

    recipe: Recipe
    best_epoch: int | None  # None (and no score) when the search was skipped
    score: float | None
    interval: list[float] | None
    trials: list[dict[str, Any]]
    folds: int
    seconds: float
    oof_logits: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None  # why no trial ran (the budget cannot pay for two); the recipe is the default


def search_space(config: TrainConfig, arch: str, *, median_side: float, square: bool, gpu: bool) -> SearchSpace:
    """The default space, narrowed or widened by ``train.search`` (and by what a CPU can afford)."""
    s = config.search
    info = ARCHS[arch]
    depths = sorted(set(s.depths if s.depths is not None else info.search_depths) | {0})
    if s.full if s.full is not None else gpu:
        depths.append(info.num_blocks)
    depths = [d for d in depths if 0 <= d <= info.num_blocks]
    sizes = s.input_sizes or ([160, 224] if median_side < 200 else [224, 288])
    resize = list(s.resize or (["stretch"] if square else ["letterbox", "stretch"]))
    default_depth = min((d for d in depths if d > 0), key=lambda d: abs(d - info.default_search_depth), default=0)
    default = Recipe(
        trainable_blocks=default_depth,
        input_size=224 if 224 in sizes else sizes[0],
        resize=resize[0],
        class_weighting="sqrt" if "sqrt" in s.class_weighting else s.class_weighting[0],
        lr=float(min(max(config.lr, s.lr[0]), s.lr[1])),
        augment_strength=1.0 if 1.0 in s.augment_strength else s.augment_strength[0],
    )
    return SearchSpace(
        depths=depths,
        input_sizes=list(sizes),
        resize=resize,
        class_weighting=list(s.class_weighting),
        lr=(float(s.lr[0]), float(s.lr[1])),
        augment_strength=list(s.augment_strength),
        default=default,
    )


@dataclass(frozen=True)
class TrialCost:
    """Seconds one trial's folds took to train (its cache aside), and its recipe."""

    seconds: float
    recipe: Recipe

    def scaled(self, recipe: Recipe) -> float:
        """The training seconds of ``recipe``: in proportion to input pixels and trained blocks (a linear head
        counted as one block)."""
        pixels = (recipe.input_size / self.recipe.input_size) ** 2
        blocks = max(recipe.trainable_blocks, 1) / max(self.recipe.trainable_blocks, 1)
        return self.seconds * pixels * blocks


def cheapest(space: SearchSpace) -> list[Recipe]:
    """The least costly recipes of a space, one per input side: its shallowest depth (a linear head)."""
    depth = min(space.depths)
    return [replace(space.default, trainable_blocks=depth, input_size=size) for size in space.input_sizes]


def _suggest(trial: Any, space: SearchSpace) -> Recipe:
    def pick(name: str, options: list[Any]) -> Any:
        return options[0] if len(options) == 1 else trial.suggest_categorical(name, options)

    return Recipe(
        trainable_blocks=int(pick("trainable_blocks", space.depths)),
        input_size=int(pick("input_size", space.input_sizes)),
        resize=str(pick("resize", space.resize)),
        class_weighting=str(pick("class_weighting", space.class_weighting)),
        lr=float(trial.suggest_float("lr", space.lr[0], space.lr[1], log=True)),
        augment_strength=float(pick("augment_strength", space.augment_strength)),
    )


def _params(recipe: Recipe, space: SearchSpace) -> dict[str, Any]:
    """A recipe as the trial parameters Optuna knows (for enqueueing the default)."""
    params: dict[str, Any] = {"lr": recipe.lr}
    for name, options in (
        ("trainable_blocks", space.depths),
        ("input_size", space.input_sizes),
        ("resize", space.resize),
        ("class_weighting", space.class_weighting),
        ("augment_strength", space.augment_strength),
    ):
        if len(options) > 1:
            params[name] = getattr(recipe, name)
    return params


def group_folds(y: np.ndarray, groups: np.ndarray, *, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified group k-fold (train, held-out) index pairs; fewer folds when there are fewer groups."""
    import warnings

    from sklearn.model_selection import StratifiedGroupKFold

    k = max(2, min(folds, len(np.unique(groups))))
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a class with fewer groups than folds: sklearn warns, the split holds
        return [(tr, te) for tr, te in splitter.split(np.zeros(len(y)), y, groups)]


def _curve_stats(curves: list[list[float]]) -> tuple[int, float, list[float]]:
    """(best epoch, fold-mean score there, per-fold scores there); a fold that stopped early keeps its last."""
    length = max(len(c) for c in curves)
    padded = np.array([c + [c[-1]] * (length - len(c)) for c in curves])
    mean = padded.mean(axis=0)
    best = int(np.argmax(mean))
    return best + 1, float(mean[best]), padded[:, best].tolist()


def run_search(
    *,
    arch: str,
    config: TrainConfig,
    space: SearchSpace,
    inputs: InputCache,
    y: np.ndarray,
    groups: np.ndarray,
    new_model: Callable[[int], Classifier],
    device: Any,
    study_name: str,
    log: Callable[[str], None],
    may_skip: bool = False,
) -> SearchResult:
    """Run trials until the budget or ``max_trials`` is spent; return the best completed one.

    With ``may_skip`` (the validation split can stop the refit on its own) an in-memory search whose budget cannot
    pay for the default recipe twice runs no trial and returns the default recipe with ``skipped`` set.
    """
    import optuna

    from edgetl.bench.intervals import balanced_accuracy_interval

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    deadline = started + config.budget_minutes * 60
    folds = group_folds(y, groups, folds=config.search.folds, seed=config.seed)
    fold_config = config.model_copy(update={"epochs": config.search.epochs})
    if may_skip and config.search.storage is None and config.search.max_trials > 1:
        estimate = default_trial_seconds(
            arch=arch,
            space=space,
            inputs=inputs,
            y=y,
            folds=len(folds),
            config=fold_config,
            new_model=new_model,
            device=device,
        )
        spent = time.perf_counter() - started
        reason = skip_note(spent=spent, trial_seconds=estimate, budget_minutes=config.budget_minutes)
        if reason:
            log(reason)
            return SearchResult(
                recipe=space.default,
                best_epoch=None,
                score=None,
                interval=None,
                trials=[],
                folds=len(folds),
                seconds=round(time.perf_counter() - started, 1),
                skipped=reason,
            )
    sampler = optuna.samplers.TPESampler(seed=config.seed, n_startup_trials=4)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=_PRUNE_AFTER, n_warmup_steps=0)
    study = optuna.create_study(
        direction="maximize",
        sampler=sampler,
        pruner=pruner,
        storage=config.search.storage,
        study_name=study_name,
        load_if_exists=config.search.storage is not None,
    )
    study.enqueue_trial(_params(space.default, space), skip_if_exists=True)
    oof: dict[int, np.ndarray] = {}
    notes: list[str] = []
    per_pixel: list[float] = []  # cache seconds per pixel of input, to refuse a cache the budget cannot pay for
    measured: list[TrialCost] = []  # the first trial's training cost: the yardstick of every later trial's price

    def price(recipe: Recipe) -> float:
        """Seconds a trial of ``recipe`` should take here: a new cache at the measured seconds per pixel, and its
        folds' training scaled from the first trial's (none before the first has finished)."""
        cache = 0.0
        if per_pixel and not inputs.has(recipe.input_size, recipe.resize, recipe.augment_strength):
            cache = per_pixel[0] * recipe.input_size**2
        return cache + (measured[0].scaled(recipe) if measured else 0.0)

    def objective(trial: Any) -> float:
        recipe = _suggest(trial, space)
        first = len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) == 0
        trial.set_user_attr("recipe", recipe.__dict__)
        t0 = time.perf_counter()
        start = recipe.start(arch)
        if not first:
            left = deadline - time.perf_counter()
            cost = price(recipe)
            if cost > left:
                trial.set_user_attr(
                    "pruned_because", f"the budget cannot pay for it (about {cost:.0f} s; {max(left, 0):.0f} s left)"
                )
                if min(price(r) for r in cheapest(space)) > left:
                    study.stop()  # no recipe of the space can finish in what is left
                raise optuna.TrialPruned()
        before = sum(inputs.cache_seconds.values())
        views = inputs.views(
            size=recipe.input_size, resize=recipe.resize, strength=recipe.augment_strength, start=start
        )
        built = sum(inputs.cache_seconds.values()) - before
        if not per_pixel and inputs.cache_seconds:
            # The first cache may have been built before any trial (pricing the default recipe builds its inputs).
            per_pixel.append((built or max(inputs.cache_seconds.values())) / recipe.input_size**2)
        fit_started = time.perf_counter()
        spec = inputs.spec(recipe.input_size, recipe.resize)
        curves: list[list[float]] = []
        logits_per_fold: list[list[np.ndarray]] = []
        fold_best: list[float] = []
        for f, (train_idx, held_idx) in enumerate(folds):
            model = new_model(recipe.input_size)
            rng = np.random.default_rng([config.seed, trial.number, f])
            held = views.subset(held_idx)
            try:
                result = fit(
                    model,
                    views.subset(train_idx),
                    y[train_idx],
                    config=fold_config,
                    lr=recipe.lr,
                    class_weighting=recipe.class_weighting,
                    augment=inputs.augment.scaled(recipe.augment_strength),
                    spec=spec,
                    rng=rng,
                    device=device,
                    evaluate=(held.base(), y[held_idx]),
                    keep_eval_logits=True,
                    deadline=None if first else deadline,
                )
            except TimeoutError:
                trial.set_user_attr("pruned_because", "the budget ran out")
                raise optuna.TrialPruned() from None
            curve = [row["val_balanced_accuracy"] for row in result.history]
            log(
                f"  trial {trial.number} fold {f + 1}/{len(folds)}: held-out balanced accuracy {max(curve):.3f} "
                f"(epoch {int(np.argmax(curve)) + 1} of {len(curve)}, {time.perf_counter() - t0:.0f} s so far)"
            )
            curves.append(curve)
            logits_per_fold.append(result.eval_logits)
            fold_best.append(max(curve))
            trial.report(float(np.mean(fold_best)), step=f)
            if not first and trial.should_prune():
                trial.set_user_attr("pruned_because", f"below the median of earlier trials after fold {f + 1}")
                raise optuna.TrialPruned()
            per_fold = (time.perf_counter() - fit_started) / (f + 1)
            if not first and time.perf_counter() + per_fold * (len(folds) - f - 1) > deadline:
                trial.set_user_attr("pruned_because", f"the budget cannot pay for its folds after fold {f + 1}")
                raise optuna.TrialPruned()
        if first:
            measured.append(TrialCost(time.perf_counter() - fit_started, recipe))
        best_epoch, score, scores = _curve_stats(curves)
        out = np.zeros((len(y), logits_per_fold[0][0].shape[1]), dtype=np.float32)
        for (_, held_idx), fold_logits in zip(folds, logits_per_fold, strict=True):
            out[held_idx] = fold_logits[min(best_epoch, len(fold_logits)) - 1]
        oof[trial.number] = out
        trial.set_user_attr("best_epoch", best_epoch)
        trial.set_user_attr("fold_scores", [round(s, 4) for s in scores])
        trial.set_user_attr("seconds", round(time.perf_counter() - t0, 1))
        trial.set_user_attr("interval", balanced_accuracy_interval(y, out.argmax(1), groups))
        log(
            f"trial {trial.number}: {_describe(recipe, arch)}: CV balanced accuracy {score:.3f} "
            f"at epoch {best_epoch} ({time.perf_counter() - t0:.0f} s)"
        )
        return score

    def remaining() -> float:
        return max(1.0, deadline - time.perf_counter())

    study.optimize(objective, n_trials=1, catch=())  # the default recipe, whatever the budget
    if config.search.max_trials > 1 and time.perf_counter() < deadline:
        study.optimize(objective, n_trials=config.search.max_trials - 1, timeout=remaining(), catch=())
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = max(complete, key=lambda t: (t.value or 0.0, -t.number))
    recipe = Recipe(**best.user_attrs["recipe"])
    if best.number not in oof:
        notes.append(f"trial {best.number} ran on another machine: no out-of-fold scores here")
    alone = budget_note(
        completed=len(complete),
        started=len(study.trials),
        max_trials=config.search.max_trials,
        budget_minutes=config.budget_minutes,
        first_seconds=best.user_attrs.get("seconds"),
    )
    if alone:
        notes.append(alone)
        log(alone)
    trials = [_row(t, arch) for t in study.trials]
    return SearchResult(
        recipe=recipe,
        best_epoch=int(best.user_attrs["best_epoch"]),
        score=float(best.value or 0.0),
        interval=list(best.user_attrs.get("interval", [0.0, 1.0])),
        trials=trials,
        folds=len(folds),
        seconds=round(time.perf_counter() - started, 1),
        oof_logits=oof.get(best.number),
        notes=notes,
    )


def default_trial_seconds(
    *,
    arch: str,
    space: SearchSpace,
    inputs: InputCache,
    y: np.ndarray,
    folds: int,
    config: TrainConfig,
    new_model: Callable[[int], Classifier],
    device: Any,
) -> float:
    """Predicted wall seconds of the default recipe's cross-validation on this host: its inputs are built (the
    refit reuses them) and a few batches of training are timed; each held-out image costs about a third of a
    training one (a forward pass, no backward)."""
    recipe = space.default
    views = inputs.views(
        size=recipe.input_size, resize=recipe.resize, strength=recipe.augment_strength, start=recipe.start(arch)
    )
    per_image = seconds_per_image(
        lambda: new_model(recipe.input_size),
        views,
        y,
        config=config,
        spec=inputs.spec(recipe.input_size, recipe.resize),
        augment=inputs.augment.scaled(recipe.augment_strength),
        device=device,
    )
    held = len(y) / folds
    return folds * config.epochs * (len(y) - held + held / 3) * per_image


def skip_note(*, spent: float, trial_seconds: float, budget_minutes: float) -> str | None:
    """Why no trial should run, or None: after ``spent`` seconds the budget cannot pay for two trials."""
    budget = budget_minutes * 60
    if spent + 2 * trial_seconds <= budget:
        return None
    return (
        f"No recipe search: one cross-validated trial of the default recipe would take about {trial_seconds:.0f} s "
        f"here, so the {budget_minutes:g} min budget ({spent:.0f} s of it spent building its inputs) cannot compare "
        "two recipes. The default recipe is trained once, stopped on the validation split. "
        + _more_search(f"give it at least {math.ceil((spent + 2 * trial_seconds) / 60)} min")
    )


def budget_note(
    *, completed: int, started: int, max_trials: int, budget_minutes: float, first_seconds: float | None
) -> str | None:
    """What to say when the budget let only the default recipe finish: it was chosen against no other."""
    if completed > 1 or max_trials <= 1:
        return None
    took = f"; the default alone took {first_seconds:.0f} s" if first_seconds else ""
    return (
        f"only {completed} of {started} trial(s) completed within the {budget_minutes:g} min budget{took}: the recipe "
        "is the default one, compared with no other. " + _more_search("raise train.budget_minutes")
    )


def _more_search(budget: str) -> str:
    """The ways to a search that compares recipes: ``budget`` (what to do with the budget), a GPU, a shared study."""
    return (
        f"For a real search {budget} (--budget-minutes), train on a GPU (--device cuda) or let several machines "
        "share the study (--study-storage)."
    )


def _describe(recipe: Recipe, arch: str) -> str:
    strategy = recipe.strategy(arch)
    depth = f"partial {recipe.trainable_blocks}" if strategy == "partial" else strategy
    return (
        f"{depth}, {recipe.input_size} px {recipe.resize}, weights {recipe.class_weighting}, lr {recipe.lr:.2g}, "
        f"augment x{recipe.augment_strength:g}"
    )


def _row(trial: Any, arch: str) -> dict[str, Any]:
    recipe = trial.user_attrs.get("recipe")
    complete = trial.state.name == "COMPLETE"
    return {
        "trial": trial.number,
        "state": trial.state.name.lower(),
        "recipe": recipe,
        "description": _describe(Recipe(**recipe), arch) if recipe else "",
        "cv_balanced_accuracy": round(float(trial.value), 4) if complete and trial.value is not None else None,
        "interval": trial.user_attrs.get("interval"),
        "best_epoch": trial.user_attrs.get("best_epoch"),
        "fold_scores": trial.user_attrs.get("fold_scores"),
        "seconds": trial.user_attrs.get("seconds"),
        "pruned_because": trial.user_attrs.get("pruned_because"),
    }


def median_side(sizes: list[tuple[int, int]]) -> tuple[float, bool]:
    """(median shorter side, whether the images are square within 5 %)."""
    if not sizes:
        return 224.0, True
    short = [min(w, h) for w, h in sizes]
    aspect = [max(w, h) / max(1, min(w, h)) for w, h in sizes]
    return float(np.median(short)), bool(np.median(aspect) <= 1.05 and math.isfinite(np.median(aspect)))
