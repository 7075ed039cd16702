"""Recipe search on the validation split: candidate changes to the presets, several seeds each, ranked by validation.

The presets' recipes were chosen with this script. Each candidate is a preset with some fields replaced
(see :data:`CANDIDATES`); each (candidate, seed) trains in its own process, several at once (``--jobs``), so
the search can run on a GPU or a many-core machine and the numbers carry over: accuracy depends on the recipe,
not on where it ran. Only validation accuracy is printed and summarised, since choices are made on it; the test set
stays for the benchmark. Time a candidate on the machine it is meant for with ``benchmarks/benchmark.py``.

Usage: ``python benchmarks/recipe_sweep.py [--family default fast best] [--seeds 3] [--jobs 8] [--device cuda]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[1] / "src"

_BLOCK = {"hidden_units": 16, "batch_norm": True, "batch_norm_at": "block"}

#: family -> candidate name -> (preset, fields replaced). The first candidate of each family is the preset as it was.
CANDIDATES: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {
    "default": {
        "conv_aug_e3 (was default)": ("default", {"model_options": {"hidden_units": 16, "batch_norm": True}}),
        "conv_noaug_e3": ("default", {"model_options": {"hidden_units": 16, "batch_norm": True}, "augment": None}),
        "block_aug_e3": ("default", {"model_options": _BLOCK}),
        "block_noaug_e3": ("default", {"model_options": _BLOCK, "augment": None}),
        "block_noaug_e2": ("default", {"model_options": _BLOCK, "augment": None, "epochs": 2}),
        "block_aug_e4": ("default", {"model_options": _BLOCK, "epochs": 4}),
        "block_noaug_e3_lr0.1": ("default", {"model_options": _BLOCK, "augment": None, "lr": 0.1}),
        "block_noaug_e3_lr0.4": ("default", {"model_options": _BLOCK, "augment": None, "lr": 0.4}),
        "block_noaug_e3_ls0": ("default", {"model_options": _BLOCK, "augment": None, "label_smoothing": 0.0}),
        "block_b2x32_noaug_e3": ("default", {"model_options": {**_BLOCK, "block2_units": 32}, "augment": None}),
        "block_b2x32_aug_e3": ("default", {"model_options": {**_BLOCK, "block2_units": 32}}),
        "block_h24_noaug_e3": ("default", {"model_options": {**_BLOCK, "hidden_units": 24}, "augment": None}),
        "block_b256_lr0.4_aug_e3": ("default", {"model_options": _BLOCK, "batch_size": 256, "lr": 0.4}),
        "none_noaug_e3_lr0.05": ("default", {"model_options": {"hidden_units": 16}, "augment": None, "lr": 0.05}),
    },
    "fast": {
        "c16-32-128 (was fast)": ("fast", {}),
        "c16-32-128_ls0.1": ("fast", {"label_smoothing": 0.1}),
        "c16-32-128_lr2e-2": ("fast", {"lr": 2e-2}),
        "c16-32-128_b128": ("fast", {"batch_size": 128}),
        "c24-32-128": ("fast", {"model_options": {"channels1": 24, "channels2": 32, "fc_units": 128, "batch_norm": True}}),
        "c12-24-128": ("fast", {"model_options": {"channels1": 12, "channels2": 24, "fc_units": 128, "batch_norm": True}}),
        "c16-32-64": ("fast", {"model_options": {"channels1": 16, "channels2": 32, "fc_units": 64, "batch_norm": True}}),
        "c16-32-128_sgd": ("fast", {"optimizer": "sgd", "lr": 0.2, "momentum": 0.9, "nesterov": True, "cycle_momentum": True}),
    },
    "best": {
        "conv32_aug_e12 (was best)": ("best", {}),
        "block32_aug_e12": ("best", {"model_options": {"hidden_units": 32, "batch_norm": True, "batch_norm_at": "block"}}),
        "conv32_aug_e16": ("best", {"epochs": 16}),
        "block48_aug_e16": ("best", {"model_options": {"hidden_units": 48, "batch_norm": True, "batch_norm_at": "block"}, "epochs": 16}),
        "block32_b2x64_aug_e16": (
            "best",
            {"model_options": {"hidden_units": 32, "block2_units": 64, "batch_norm": True, "batch_norm_at": "block"}, "epochs": 16},
        ),
        "conv32_b2x64_aug_e12": ("best", {"model_options": {"hidden_units": 32, "block2_units": 64, "batch_norm": True}}),
    },
}


def worker(family: str, name: str, seed: int, device: str, smoke: bool = False) -> None:
    """Train one candidate with one seed and print its validation result as JSON on the last line."""
    from mnist_cnn.presets import get_preset
    from mnist_cnn.runs import RunOptions
    from mnist_cnn.tooling.runctl.controls import fit_controlled

    preset, changes = CANDIDATES[family][name]
    config = get_preset(preset, seed=seed)
    for field_name, value in changes.items():
        setattr(config, field_name, value)
    if smoke:
        config.epochs, config.train_size, config.val_size, config.test_size = 1, 2000, 1000, 1000
    config.validate()
    result = fit_controlled(config, RunOptions(device=device, quiet=True))  # $MNIST_CNN_THREADS as the command line reads it
    metrics = result.metrics
    print(
        json.dumps(
            {
                "family": family,
                "candidate": name,
                "seed": seed,
                "val_accuracy": metrics["val_accuracy"],
                "val_loss": metrics["val_loss"],
                "train_seconds": metrics["train_seconds"],
                "device": metrics["device"],
                "precision": metrics["precision"],
                "config": config.to_dict(),
            }
        )
    )


def run_one(family: str, name: str, seed: int, device: str, smoke: bool = False) -> dict[str, Any]:
    """One worker subprocess on this checkout's ``src/``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, __file__, "--worker", family, name, str(seed), "--device", device] + (["--smoke"] if smoke else [])
    completed = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if completed.returncode != 0:
        return {"family": family, "candidate": name, "seed": seed, "error": completed.stderr.strip().splitlines()[-1:]}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """One Markdown table per family: validation mean and min per candidate, in the order listed."""
    lines = []
    for family in dict.fromkeys(r["family"] for r in rows):
        lines += [
            f"\n{family}:",
            "| candidate | seeds | val accuracy mean | val min | train s median (where it ran) |",
            "|---|---|---|---|---|",
        ]
        for name in CANDIDATES[family]:
            done = [r for r in rows if r["family"] == family and r["candidate"] == name and "val_accuracy" in r]
            failed = [r for r in rows if r["family"] == family and r["candidate"] == name and "error" in r]
            if done:
                accuracies = [r["val_accuracy"] for r in done]
                seconds = statistics.median(r["train_seconds"] for r in done)
                lines.append(f"| {name} | {len(done)} | {statistics.fmean(accuracies):.4f} | {min(accuracies):.4f} | {seconds:.1f} |")
            for r in failed:
                lines.append(f"| {name} | seed {r['seed']} failed: {r['error']} | | | |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--family", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES), help="which presets' candidates")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per candidate (0..N-1)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once")
    parser.add_argument("--device", default="cpu", help="where each run trains")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("recipe_sweep.jsonl"), help="one JSON line per run")
    parser.add_argument("--smoke", action="store_true", help="1 epoch on 2,000 images per run, to check the script")
    parser.add_argument("--worker", nargs=3, metavar=("FAMILY", "CANDIDATE", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], int(args.worker[2]), args.device, args.smoke)
        return
    # Longest families first, so the pool ends with short runs and stays busy.
    order = sorted(args.family, key=lambda family: ["best", "default", "fast"].index(family))
    tasks = [(family, name, seed) for family in order for seed in range(args.seeds) for name in CANDIDATES[family]]
    started = time.perf_counter()
    rows = []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool, args.out.open("a") as log:
        futures = [pool.submit(run_one, *task, args.device, args.smoke) for task in tasks]
        for future in as_completed(futures):
            row = future.result()
            rows.append(row)
            log.write(json.dumps(row) + "\n")
            log.flush()
            shown = f"validation {row['val_accuracy']:.4f}" if "val_accuracy" in row else f"failed: {row['error']}"
            print(f"[{time.perf_counter() - started:6.0f}s] {row['family']} {row['candidate']} seed {row['seed']}: {shown}", flush=True)
    print("\n".join(summary(rows)))


if __name__ == "__main__":
    main()
