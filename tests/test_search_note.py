"""A search that only got to finish the default recipe says so, in its notes and in the report."""

from pathlib import Path

from conftest import make_image_folder, tiny_config

from edgetl import report_sections
from edgetl.data.dataset import prepare_dataset
from edgetl.search import budget_note, skip_note
from edgetl.train import train_model


def test_one_completed_trial_is_named_a_default_not_a_choice():
    note = budget_note(completed=1, started=2, max_trials=40, budget_minutes=6, first_seconds=205.9)
    assert note is not None
    assert "only 1 of 2 trial(s)" in note and "6 min budget" in note and "206 s" in note
    assert "--budget-minutes" in note and "--device cuda" in note and "--study-storage" in note
    assert budget_note(completed=2, started=3, max_trials=40, budget_minutes=6, first_seconds=100.0) is None
    # A config that asks for one trial gets what it asked for, without a note.
    assert budget_note(completed=1, started=1, max_trials=1, budget_minutes=6, first_seconds=100.0) is None


def test_report_counts_completed_trials_and_shows_the_notes():
    trials = [{"trial": 0, "state": "complete"}, {"trial": 1, "state": "pruned"}]
    search = {"trials": trials, "seconds": 365, "budget_minutes": 6, "folds": 3, "best_epoch": 8}
    search["notes"] = ["only 1 of 2 trial(s) completed"]
    section = report_sections.search({"model": {"search": search}})
    texts = [b.text for b in section.blocks if isinstance(b, report_sections.Text)]
    assert texts[0].startswith("2 trials (1 completed) in 365 s")
    assert "Note: only 1 of 2 trial(s) completed" in texts


def test_a_budget_that_cannot_pay_for_two_trials_runs_none():
    assert skip_note(spent=60, trial_seconds=100, budget_minutes=6) is None  # 60 + 200 s fit in 360 s
    note = skip_note(spent=80, trial_seconds=460, budget_minutes=6)
    assert note is not None and "about 460 s" in note and "6 min budget" in note
    assert "at least 17 min" in note and "--budget-minutes" in note and "--device cuda" in note


def _adequate_dataset(base: Path):
    images = make_image_folder(base / "images", per_class=60, size=32)
    config = tiny_config(images, base / "runs", data__val_fraction=0.5, train__strategy="auto")
    dataset = prepare_dataset(config.data, base / "data")
    assert dataset.info["validation"]["adequate"], dataset.info["validation"]
    return config, dataset


def test_a_search_the_budget_cannot_pay_for_twice_trains_the_default_once(tmp_path: Path):
    config, dataset = _adequate_dataset(tmp_path)
    config = config.model_copy(update={"train": config.train.model_copy(update={"budget_minutes": 0.001})})
    result = train_model(config, dataset, tmp_path / "train", progress=False)
    search = result.meta["search"]
    assert search["skipped"].startswith("No recipe search") and search["trials"] == []
    assert result.meta["recipe"]["source"] == "default (search skipped)"
    assert result.meta["stopped"] != "fixed epochs"  # the validation split chose the epoch
    assert "no search ran" in (tmp_path / "train" / "recipe.yaml").read_text()
    section = report_sections.search({"model": {"search": search}})
    assert [b.text for b in section.blocks] == [search["skipped"]]


def test_a_search_with_budget_for_two_trials_compares_them(tmp_path: Path):
    config, dataset = _adequate_dataset(tmp_path)
    search = config.train.search.model_copy(update={"max_trials": 2, "epochs": 1})
    train = config.train.model_copy(update={"budget_minutes": 30, "search": search})
    result = train_model(config.model_copy(update={"train": train}), dataset, tmp_path / "train", progress=False)
    assert result.meta["search"]["skipped"] is None and len(result.meta["search"]["trials"]) == 2


def test_pricing_a_trial_leaves_torch_random_state_as_it_was():
    import numpy as np
    import torch

    from edgetl.config import AugmentConfig, TrainConfig
    from edgetl.fit import Views, seconds_per_image
    from edgetl.models import build_classifier
    from edgetl.preprocess import PreprocessSpec

    images = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (16, 1, 32, 32), dtype=np.uint8))
    labels = np.array([0, 1] * 8)
    torch.manual_seed(3)
    before = torch.get_rng_state()
    seconds = seconds_per_image(
        lambda: build_classifier("mobilenet_v2", 2, gray=True),
        Views(start=0, data=[images]),
        labels,
        config=TrainConfig(batch_size=8),
        spec=PreprocessSpec.for_channels(1, input_size=32),
        augment=AugmentConfig(),
        device=torch.device("cpu"),
        images=16,
    )
    assert seconds > 0 and torch.equal(torch.get_rng_state(), before)


def test_a_trial_is_priced_from_the_first_by_pixels_and_trained_blocks():
    from edgetl.search import Recipe, SearchSpace, TrialCost, cheapest

    default = Recipe(5, 224, "stretch", "sqrt", 1e-3, 1.0)
    cost = TrialCost(100.0, default)
    assert cost.scaled(default) == 100.0
    assert abs(cost.scaled(Recipe(8, 288, "stretch", "none", 3e-4, 1.0)) - 100 * (288 / 224) ** 2 * 8 / 5) < 1e-9
    assert cost.scaled(Recipe(0, 224, "stretch", "sqrt", 1e-3, 1.0)) == 20.0  # a linear head counts as one block
    space = SearchSpace([0, 3, 5], [224, 288], ["stretch"], ["sqrt"], (3e-4, 3e-3), [1.0], default)
    assert [(r.trainable_blocks, r.input_size) for r in cheapest(space)] == [(0, 224), (0, 288)]


def test_a_search_stops_when_no_recipe_of_its_space_can_finish_in_the_budget_left(tmp_path: Path, monkeypatch):
    from edgetl import search as search_module

    monkeypatch.setattr(search_module.TrialCost, "scaled", lambda self, recipe: 1e9)
    config, dataset = _adequate_dataset(tmp_path)
    space = config.train.search.model_copy(update={"max_trials": 40, "epochs": 1})
    train = config.train.model_copy(update={"budget_minutes": 30, "search": space})
    result = train_model(config.model_copy(update={"train": train}), dataset, tmp_path / "train", progress=False)
    trials = result.meta["search"]["trials"]
    assert [t["state"] for t in trials] == ["complete", "pruned"], trials
    assert trials[1]["pruned_because"].startswith("the budget cannot pay for it (about 1000000000 s;")
