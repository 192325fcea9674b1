"""Compare training recipes on the validation split: every variant x seed is trained, the test split is never read.

Usage: python benchmarks/sweep_recipes.py --config examples/elpv.yaml --grid GRID.yaml --out sweep/
       [--seeds 0 1 2] [--device cuda] [--jobs 4]

GRID.yaml maps a variant name to config overrides in dotted form, e.g.
    base: {}
    ls01: {train.label_smoothing: 0.1}
    b10: {train.trainable_blocks: 10}
Writes OUT/runs.csv (one row per variant and seed: best epoch, val accuracy, balanced accuracy, loss, seconds)
and prints the mean and spread per variant, best mean val balanced accuracy first.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from edgetl.config import BuildConfig, build_config_from_dict, load_build_config, set_dotted
from edgetl.data.dataset import load_split, prepare_dataset


def _variant(base: BuildConfig, overrides: dict[str, Any], seed: int, device: str | None) -> BuildConfig:
    changes = {**overrides, "train.seed": seed, **({"train.device": device} if device else {})}
    return build_config_from_dict(set_dotted(base.model_dump(mode="json"), changes), source="sweep variant")


def _train(job: tuple[str, int, BuildConfig, Path, int]) -> dict[str, Any]:
    import torch

    from edgetl.train import train_model

    name, seed, config, out, threads = job
    torch.set_num_threads(threads)
    config.train.threads = threads
    dataset = load_split(out / "data")
    result = train_model(config, dataset, out / f"{name}-s{seed}", progress=False)
    val = result.meta["val_metrics"]
    timings = result.meta["timings"]
    return {
        "variant": name,
        "seed": seed,
        "best_epoch": result.meta["best_epoch"],
        "epochs_run": result.meta["epochs_run"],
        "val_accuracy": val["val_accuracy"],
        "val_balanced_accuracy": val["val_balanced_accuracy"],
        "val_loss": val["val_loss"],
        "train_s": round(timings.get("train_s", 0.0) + timings.get("cache_s", 0.0), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--grid", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default=None)
    parser.add_argument("--jobs", type=int, default=1, help="Variants trained at once (processes).")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per job.")
    args = parser.parse_args()
    base = load_build_config(args.config)
    grid = yaml.safe_load(args.grid.read_text()) or {}
    jobs = [
        (name, seed, _variant(base, overrides or {}, seed, args.device), args.out, args.threads)
        for name, overrides in grid.items()
        for seed in args.seeds
    ]
    prepare_dataset(base.data, args.out / "data")
    # spawn: a forked child cannot use CUDA.
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        rows = []
        for row in pool.map(_train, jobs):
            rows.append(row)
            print(
                f"{row['variant']} seed {row['seed']}: val acc {row['val_accuracy']:.4f}, "
                f"bacc {row['val_balanced_accuracy']:.4f}, loss {row['val_loss']:.4f}, "
                f"epoch {row['best_epoch']}/{row['epochs_run']}, {row['train_s']} s",
                flush=True,
            )
    with open(args.out / "runs.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print("\nvariant | seeds | val acc mean (sd) | val bacc mean (sd) | val loss mean")
    summary = []
    for name in grid:
        mine = [r for r in rows if r["variant"] == name]
        acc = [r["val_accuracy"] for r in mine]
        bacc = [r["val_balanced_accuracy"] for r in mine]
        sd = statistics.stdev if len(mine) > 1 else (lambda _: 0.0)
        summary.append((statistics.mean(bacc), name, len(mine), acc, bacc, [r["val_loss"] for r in mine], sd))
    for mean_bacc, name, count, acc, bacc, loss, sd in sorted(summary, reverse=True):
        print(
            f"{name} | {count} | {statistics.mean(acc):.4f} ({sd(acc):.4f}) | {mean_bacc:.4f} ({sd(bacc):.4f}) | "
            f"{statistics.mean(loss):.4f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
