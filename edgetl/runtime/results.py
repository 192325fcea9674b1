"""Where predictions go: a CSV or JSON Lines file written row by row (each row flushed, for a watching line),
and the summary of a run (counts per class and verdict, timing)."""

from __future__ import annotations

import csv
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from edgetl.errors import EdgetlError
from edgetl.runtime.model import Prediction

BASE_COLUMNS = ["path", "class", "score", "verdict", "ms", "error"]


class ResultsError(EdgetlError, ValueError):
    """An output file edgetl cannot write."""


def csv_value(value: Any) -> Any:
    """A CSV cell: empty for None, six decimals for floats."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6f}" if math.isfinite(value) else str(value)
    return value


class ResultWriter:
    """Predictions to ``path`` (.csv or .jsonl), or to standard output as CSV (``path`` None), one row each, flushed
    as it goes."""

    def __init__(self, path: Path | None, classes: list[str]) -> None:
        self.path = path
        self.columns = BASE_COLUMNS + [f"p_{name}" for name in classes]
        if path is None:
            self.kind, self._handle, self._owned = ".csv", sys.stdout, False
        else:
            self.kind = path.suffix.lower()
            if self.kind not in (".csv", ".jsonl"):
                raise ResultsError(f"--out {path}: write results to a .csv or a .jsonl file.")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._handle = open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed in close()
            except OSError as exc:
                raise ResultsError(f"cannot write {path}: {exc.strerror or exc}.") from exc
            self._owned = True
        self._csv = csv.DictWriter(self._handle, fieldnames=self.columns) if self.kind == ".csv" else None
        if self._csv is not None:
            self._csv.writeheader()

    def write(self, prediction: Prediction) -> None:
        row = prediction.row()
        if self._csv is not None:
            self._csv.writerow({key: csv_value(row.get(key)) for key in self.columns})
        else:
            self._handle.write(json.dumps(row) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._owned:
            self._handle.close()
        else:
            self._handle.flush()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@dataclass
class Summary:
    """Counts and timing of a prediction run."""

    images: int = 0
    errors: int = 0
    per_class: Counter[str] = field(default_factory=Counter)
    per_verdict: Counter[str] = field(default_factory=Counter)
    ms: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, prediction: Prediction) -> None:
        self.images += 1
        if prediction.error is not None:
            self.errors += 1
            self.per_verdict["error"] += 1
            return
        self.per_class[str(prediction.label)] += 1
        if prediction.verdict is not None:
            self.per_verdict[prediction.verdict] += 1
        self.ms.append(prediction.ms)

    @property
    def rejects(self) -> int:
        return self.per_verdict.get("reject", 0)

    def as_dict(self) -> dict[str, Any]:
        ordered = sorted(self.ms)
        return {
            "images": self.images,
            "errors": self.errors,
            "per_class": dict(self.per_class),
            "per_verdict": dict(self.per_verdict),
            "mean_ms": sum(ordered) / len(ordered) if ordered else None,
            "p50_ms": ordered[len(ordered) // 2] if ordered else None,
            "images_per_s": self.images / self.seconds if self.seconds > 0 else None,
        }
