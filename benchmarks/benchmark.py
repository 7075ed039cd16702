"""Benchmark: the seed recipe and the fastest public MNIST recipe against this project's presets.

Accuracy is reported on the validation split (5,000 images held out of training: what recipes are chosen on)
and on the test set (measured once per run, after training; the ``seed`` preset trains on all 60,000 images, so
its validation number is not held out). Each (recipe, seed) trains in its own subprocess, so peak memory is per run and one run cannot warm
another's caches. Training time is the wall time of the training passes alone (data already in memory,
evaluation excluded), as ``metrics.json``'s ``train_seconds``. Ratios compare medians measured in this
same invocation, so they hold even when the machine's absolute speed drifts.

Usage: ``python benchmarks/benchmark.py [--recipes seed public fast default best] [--seeds N] [--out FILE]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from mnist_cnn.presets import TrainConfig, get_preset
from mnist_cnn.runs import fit

#: The fastest public MNIST recipe we know, as published: one epoch of a small CNN (conv 24@5x5, pool, ReLU,
#: conv 32@3x3, pool, ReLU, fc 256, fc 10), Adam lr 1e-2 betas (0.7, 0.9), OneCycle without momentum cycling,
#: batch 256, in-memory data, fp32, default memory format.
PUBLIC_RECIPE = TrainConfig(
    preset="public",
    arch="small_cnn",
    model_options={"channels1": 24, "channels2": 32, "fc_units": 256},
    input_scaling="standard",
    pipeline="memory",
    epochs=1,
    batch_size=256,
    optimizer="adam",
    lr=1e-2,
    betas=(0.7, 0.9),
    schedule="onecycle",
    onecycle_pct_start=0.3,
    cycle_momentum=False,
    bf16=False,
    channels_last=False,
)

SRC = Path(__file__).resolve().parents[1] / "src"
DEFAULT_SEEDS = {"seed": 3, "public": 5, "fast": 5, "default": 3, "best": 3}
ALL_RECIPES = ["seed", "public", "fast", "default", "best"]


def recipe(name: str, seed: int) -> TrainConfig:
    """The configuration for a recipe name and seed."""
    if name == "public":
        config = TrainConfig.from_dict({**PUBLIC_RECIPE.to_dict(), "seed": seed})
        config.validate()
        return config
    return get_preset(name, seed=seed)


def worker(name: str, seed: int) -> None:
    """Train one recipe with one seed and print its measurements as JSON on the last line."""
    result = fit(recipe(name, seed), device="cpu", progress=False, log=None)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "recipe": name,
                "seed": seed,
                "val_accuracy": result.metrics["val_accuracy"],
                "test_accuracy": result.metrics["test_accuracy"],
                "train_seconds": result.metrics["train_seconds"],
                "load_seconds": result.metrics["load_seconds"],
                "precision": result.metrics["precision"],
                "peak_rss_mib": round(peak_mib, 1),
            }
        )
    )


def run_one(name: str, seed: int) -> dict:
    """Run one worker subprocess on this checkout's own ``src/`` (whatever checkout pip's editable install points at)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, __file__, "--worker", name, str(seed)], capture_output=True, text=True, check=False, env=env
    )
    if completed.returncode != 0:
        raise SystemExit(f"benchmark run {name} seed {seed} failed:\n{completed.stderr[-2000:]}")
    row = json.loads(completed.stdout.strip().splitlines()[-1])
    row["process_seconds"] = time.perf_counter() - started
    return row


def summarise(rows: list[dict], recipes: list[str]) -> list[dict]:
    """Per recipe: validation and test accuracy (mean, min), median training seconds, ratios to the seed and public recipes.

    Rows from older result files, measured before the validation split, have no ``val_accuracy``.
    """
    by_name = {name: [r for r in rows if r["recipe"] == name] for name in recipes}
    medians = {name: statistics.median(r["train_seconds"] for r in runs) for name, runs in by_name.items() if runs}
    table = []
    for name, runs in by_name.items():
        if not runs:
            continue
        accuracies = [r["test_accuracy"] for r in runs]
        validation = [r["val_accuracy"] for r in runs if "val_accuracy" in r]
        table.append(
            {
                "recipe": name,
                "runs": len(runs),
                "val_accuracy_mean": statistics.fmean(validation) if validation else None,
                "val_accuracy_min": min(validation) if validation else None,
                "accuracy_mean": statistics.fmean(accuracies),
                "accuracy_min": min(accuracies),
                "train_seconds_median": medians[name],
                "ratio_to_seed": medians[name] / medians["seed"] if "seed" in medians else None,
                "ratio_to_public": medians[name] / medians["public"] if "public" in medians else None,
                "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
                "precision": runs[0]["precision"],
            }
        )
    return table


def format_table(table: list[dict]) -> str:
    """The summary as a Markdown table."""

    def ratio(value: float | None) -> str:
        return "—" if value is None else f"{value:.3f}"

    def accuracy(value: float | None) -> str:
        return "—" if value is None else f"{value:.4f}"

    lines = [
        "| recipe | runs | val accuracy mean | val min | test accuracy mean | test min | train s (median) | x seed | x public "
        "| peak RSS MiB | precision |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table:
        lines.append(
            f"| {row['recipe']} | {row['runs']} | {accuracy(row.get('val_accuracy_mean'))} | {accuracy(row.get('val_accuracy_min'))} | "
            f"{row['accuracy_mean']:.4f} | {row['accuracy_min']:.4f} | "
            f"{row['train_seconds_median']:.2f} | {ratio(row['ratio_to_seed'])} | {ratio(row['ratio_to_public'])} | "
            f"{row['peak_rss_mib']:.0f} | {row['precision']} |"
        )
    return "\n".join(lines)


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "threads": torch.get_num_threads(), "torch": str(torch.__version__), "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=ALL_RECIPES, choices=ALL_RECIPES, help="what to run")
    parser.add_argument("--seeds", type=int, help="seeds per recipe (default: 3, or 5 for public and fast)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results.json"), help="JSON output")
    parser.add_argument("--worker", nargs=2, metavar=("RECIPE", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]))
        return
    rows = []
    # Interleave recipes seed by seed, so a slow patch of the machine hits every recipe alike.
    most = max(args.seeds or DEFAULT_SEEDS[name] for name in args.recipes)
    for seed in range(most):
        for name in args.recipes:
            if seed < (args.seeds or DEFAULT_SEEDS[name]):
                row = run_one(name, seed)
                rows.append(row)
                print(
                    f"{name:>8} seed {seed}: validation {row['val_accuracy']:.4f}, test {row['test_accuracy']:.4f}, "
                    f"training {row['train_seconds']:.2f}s",
                    flush=True,
                )
    table = summarise(rows, args.recipes)
    print()
    print(format_table(table))
    args.out.write_text(json.dumps({"machine": machine(), "summary": table, "runs": rows}, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
