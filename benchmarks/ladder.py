"""The fast-training ladder: techniques from fast-training work added one at a time to a preset, judged on validation.

Each step is a preset with some fields replaced (:data:`STEPS`); every step trains with the same seeds,
interleaved seed by seed so a slow patch of the machine hits every step alike. Per run it records the validation
accuracy after every epoch (so time to a target accuracy can be read off), the training seconds, and two
measurements that need no extra training: the validation accuracy with test-time augmentation
(:mod:`mnist_cnn.tta`, five views) and, for steps that keep one, of an exponential moving average of the weights.
Only the validation split is read: choices are made on it, and the test set stays for ``benchmark.py``.

Usage: ``python benchmarks/ladder.py [--family fast default] [--seeds 3] [--out benchmarks/ladder.json]``
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from mnist_cnn.config import TrainConfig
from mnist_cnn.data import InMemoryBatches
from mnist_cnn.engine import Callback, Run, evaluate
from mnist_cnn.presets import get_preset
from mnist_cnn.results import TrainResult
from mnist_cnn.run_data import load_data
from mnist_cnn.runs import RunOptions, fit
from mnist_cnn.tta import tta_accuracy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark import machine, training_flops_per_image  # noqa: E402

#: What the ladder's steps turn off: each preset as it was before the ladder.
OFF = {"whiten": False, "identity_init": False, "norm_lr_scale": 1.0}
#: The validation accuracy each family's time-to-target column counts to.
TARGETS = {"fast": 0.990, "default": 0.994, "best": 0.996}


def _narrow(channels1: int, channels2: int, fc_units: int) -> dict[str, Any]:
    """``fast``'s small CNN with other widths."""
    return {"channels1": channels1, "channels2": channels2, "fc_units": fc_units, "batch_norm": True, "batch_norm_at": "block"}


#: family -> ordered steps: (name, preset, fields replaced, EMA decay or None). The first is the preset without any
#: ladder technique, the second adds the whitened first convolution, each later "+" step adds one technique to
#: the second, and the last steps spend what was bought on time (fewer epochs, larger batches, narrower layers).
STEPS: dict[str, list[tuple[str, str, dict[str, Any], float | None]]] = {
    "fast": [
        ("baseline", "fast", OFF, None),
        ("+ whitened first conv", "fast", {**OFF, "whiten": True}, None),
        ("+ identity init", "fast", {**OFF, "whiten": True, "identity_init": True}, None),
        ("+ batch-norm lr x4", "fast", {**OFF, "whiten": True, "norm_lr_scale": 4.0}, None),
        ("+ EMA of weights", "fast", {**OFF, "whiten": True}, 0.99),
        # what the accuracy bought, spent on time: fewer, larger steps, or a narrower network
        ("whitened, batch 512", "fast", {**OFF, "whiten": True, "batch_size": 512, "lr": 2e-2}, None),
        ("whitened, 12/24 channels", "fast", {**OFF, "whiten": True, "model_options": _narrow(12, 24, 128)}, None),
        (
            "whitened, 12/24/64, batch 512",
            "fast",
            {**OFF, "whiten": True, "batch_size": 512, "lr": 2e-2, "model_options": _narrow(12, 24, 64)},
            None,
        ),
    ],
    "default": [
        ("baseline", "default", OFF, None),
        ("+ whitened first conv", "default", {**OFF, "whiten": True}, None),
        ("+ identity init", "default", {**OFF, "whiten": True, "identity_init": True}, None),
        ("+ batch-norm lr x4", "default", {**OFF, "whiten": True, "norm_lr_scale": 4.0}, None),
        ("+ EMA of weights", "default", {**OFF, "whiten": True}, 0.995),
        ("2 epochs", "default", {**OFF, "whiten": True, "epochs": 2}, None),
        ("2 epochs, batch-norm lr x4", "default", {**OFF, "whiten": True, "norm_lr_scale": 4.0, "epochs": 2}, None),
    ],
}


class WeightAverage(Callback):
    """Keeps an exponential moving average of the weights (and batch-norm statistics) after every step."""

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.average: AveragedModel | None = None

    def before_fit(self, run: Run) -> None:
        self.average = AveragedModel(run.model, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True)

    def after_step(self, run: Run) -> None:
        assert self.average is not None
        self.average.update_parameters(run.model)


def one_run(family: str, step: int, seed: int, quick: bool) -> dict[str, Any]:
    """Train one step of a family with one seed; its validation measurements."""
    name, preset, changes, ema = STEPS[family][step]
    changes = {**changes, "seed": seed}
    if quick:  # the tests' smoke mode: a sliver of the data, one epoch
        changes.update(train_size=512, val_size=256, test_size=256, epochs=1)
    config = get_preset(preset, **changes)
    averager = WeightAverage(ema) if ema is not None else None
    result = fit(config, RunOptions(device="cpu", quiet=True), [averager] if averager else [])
    history, device = result.history, torch.device("cpu")
    val = _val_batches(config)
    row = {
        "family": family,
        "step": name,
        "seed": seed,
        "epochs": config.epochs,
        "val_accuracy": result.metrics["val_accuracy"],
        "val_by_epoch": history["val_acc"][1:],
        "seconds_by_epoch": history["seconds"][1:],
        "train_seconds": result.metrics["train_seconds"],
        "tta_val_accuracy": tta_accuracy(result.model, val, device),
        "train_gflop": _train_gflop(config, result),
    }
    if averager is not None and averager.average is not None:
        model = averager.average.module
        row["ema_val_accuracy"] = evaluate(model, val, device)[1]
        row["ema_tta_val_accuracy"] = tta_accuracy(model, val, device)
    return row


def _val_batches(config: TrainConfig) -> InMemoryBatches:
    """The validation batches ``config`` is judged on (the run's own are not kept), read once per scaling and size."""
    return _read_val_batches(config.input_scaling, config.val_size, config.eval_batch_size)


@functools.lru_cache(maxsize=4)
def _read_val_batches(scaling: str, size: int | None, batch_size: int) -> InMemoryBatches:
    config = TrainConfig(input_scaling=scaling, val_size=size, eval_batch_size=batch_size)
    return load_data(config, None, torch.Generator().manual_seed(0)).val


def _train_gflop(config: TrainConfig, result: TrainResult) -> float:
    """Training FLOPs of the run (forward and backward convolutions and matrix products), in GFLOP."""
    held_out = result.metrics["validation"]["size"]
    trained = 60_000 - held_out if config.train_size is None else config.train_size
    return training_flops_per_image(config) * trained * config.epochs / 1e9


def time_to(row: dict[str, Any], target: float) -> float | None:
    """Training seconds until the first epoch whose validation accuracy reaches ``target`` (``None``: never)."""
    total = 0.0
    for accuracy, seconds in zip(row["val_by_epoch"], row["seconds_by_epoch"], strict=True):
        total += seconds
        if accuracy >= target:
            return total
    return None


def summarise(rows: list[dict[str, Any]], family: str) -> list[dict[str, Any]]:
    """One row per step: epochs, seeds, median seconds, validation mean/spread/min, TTA and EMA, time to target."""
    table = []
    for name, *_ in STEPS[family]:
        runs = [r for r in rows if r["family"] == family and r["step"] == name]
        if not runs:
            continue
        val = [r["val_accuracy"] for r in runs]
        reached = [time_to(r, TARGETS[family]) for r in runs]
        summary = {
            "family": family,
            "step": name,
            "epochs": runs[0]["epochs"],
            "seeds": len(runs),
            "train_seconds_median": statistics.median(r["train_seconds"] for r in runs),
            "train_gflop": runs[0]["train_gflop"],
            "val_mean": statistics.fmean(val),
            "val_sd": statistics.stdev(val) if len(val) > 1 else 0.0,
            "val_min": min(val),
            "tta_val_mean": statistics.fmean(r["tta_val_accuracy"] for r in runs),
            "target": TARGETS[family],
            "reached_target": sum(t is not None for t in reached),
            "time_to_target_median": statistics.median(t for t in reached if t is not None)
            if any(t is not None for t in reached)
            else None,
        }
        if "ema_val_accuracy" in runs[0]:
            summary["ema_val_mean"] = statistics.fmean(r["ema_val_accuracy"] for r in runs)
            summary["ema_tta_val_mean"] = statistics.fmean(r["ema_tta_val_accuracy"] for r in runs)
        table.append(summary)
    return table


def format_table(table: list[dict[str, Any]]) -> str:
    """The ladder as a Markdown table."""

    def pct(value: float | None) -> str:
        return "—" if value is None else f"{value:.4f}"

    lines = [
        "| family | step | epochs | seeds | train s (median) | val mean | val sd | val min | val with TTA | EMA val | "
        "reached target | s to target (median) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        to_target = "—" if r["time_to_target_median"] is None else f"{r['time_to_target_median']:.1f}"
        lines.append(
            f"| {r['family']} | {r['step']} | {r['epochs']} | {r['seeds']} | {r['train_seconds_median']:.2f} | "
            f"{r['val_mean']:.4f} | {r['val_sd']:.4f} | {r['val_min']:.4f} | {r['tta_val_mean']:.4f} | "
            f"{pct(r.get('ema_val_mean'))} | {r['reached_target']}/{r['seeds']} ≥ {r['target']:.3f} | {to_target} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--family", nargs="+", default=list(STEPS), choices=list(STEPS), help="which presets' ladders")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per step")
    parser.add_argument("--first-seed", type=int, default=0, help="the first seed (with --add: more seeds for an earlier ladder)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("ladder.json"), help="JSON output")
    parser.add_argument("--steps", nargs="+", help="run only these steps (names as in STEPS; default: all)")
    parser.add_argument("--add", action="store_true", help="keep the runs already in --out and summarise them with the new ones")
    parser.add_argument("--quick", action="store_true", help="smoke mode: 512 training images, one epoch (checks the script)")
    args = parser.parse_args(argv)
    rows = json.loads(args.out.read_text())["runs"] if args.add and args.out.exists() else []
    for family in args.family:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for step in range(len(STEPS[family])):
                if args.steps and STEPS[family][step][0] not in args.steps:
                    continue
                rows.append(one_run(family, step, seed, args.quick))
                r = rows[-1]
                print(
                    f"{family} | {r['step']:<24} seed {seed}: val {r['val_accuracy']:.4f} (TTA {r['tta_val_accuracy']:.4f}), "
                    f"{r['train_seconds']:.2f}s",
                    flush=True,
                )
    table = [row for family in dict.fromkeys(r["family"] for r in rows) for row in summarise(rows, family)]
    print()
    print(format_table(table))
    args.out.write_text(json.dumps({"machine": machine(), "summary": table, "runs": rows, "quick": args.quick}, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
