"""A search that only got to finish the default recipe says so, in its notes and in the report."""

from edgetl import report_sections
from edgetl.search import budget_note


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
