"""Ablation and profile: what each speed-up buys for the ``default`` recipe's training step, and where time goes.

Times a fixed number of real training steps (MNIST in memory, the default preset's optimizer and schedule)
for each variant, interleaving variants over several rounds so drift hits all alike, and reports the median
milliseconds per step, the estimated seconds per 60,000-image epoch and the ratio to the first row. Then it
profiles the default recipe with ``torch.profiler`` and lists the operators that take the most time.

Usage: ``python benchmarks/ablation.py [--steps 60] [--rounds 3] [--out benchmarks/ablation.json]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from mnist_cnn import data as mnist_data
from mnist_cnn.config import TrainConfig
from mnist_cnn.engine import train_batch
from mnist_cnn.presets import get_preset
from mnist_cnn.recipe import build_parts, model_for

CPU = torch.device("cpu")


def variants() -> list[tuple[str, TrainConfig]]:
    """From the seed's step (batch 32, fp32, no batch norm) to the default preset, one change at a time."""
    default = get_preset("default")
    plain = dataclasses.replace(default, model_options={"hidden_units": 16}, bf16=False, channels_last=False, augment=None, batch_size=32)
    steps = [
        ("batch 32, fp32, NCHW, no BN (seed step, in memory)", plain),
        ("+ batch 128", dataclasses.replace(plain, batch_size=128)),
        ("+ channels_last", dataclasses.replace(plain, batch_size=128, channels_last=True)),
        ("+ bf16 autocast", dataclasses.replace(plain, batch_size=128, channels_last=True, bf16=True)),
        (
            "+ batch norm",
            dataclasses.replace(
                plain, batch_size=128, channels_last=True, bf16=True, model_options={"hidden_units": 16, "batch_norm": True}
            ),
        ),
        ("+ augmentation (= default preset)", default),
    ]
    return steps


def time_steps(config: TrainConfig, images: torch.Tensor, labels: torch.Tensor, steps: int) -> float:
    """Seconds per training step, measured over ``steps`` steps after two warm-up steps."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = model_for(config, CPU)
    parts = build_parts(config, model, 60_000 // config.batch_size, CPU, generator)
    batches = mnist_data.InMemoryBatches(images, labels, config.batch_size, shuffle=True, generator=generator)
    model.train()
    started = None
    for step, (x, y) in enumerate(batches):
        if step == 2:
            started = time.perf_counter()
        if step == steps + 2:
            break
        train_batch(model, x, y, parts)  # the same step the engine's epoch loop and fit() take
    return (time.perf_counter() - started) / steps


def profile_default(images: torch.Tensor, labels: torch.Tensor, steps: int) -> list[dict]:
    """Top operators by self CPU time over ``steps`` steps of the default recipe."""
    config = get_preset("default")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        time_steps(config, images, labels, steps)
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows)
    return [{"op": e.key, "self_cpu_share": e.self_cpu_time_total / total, "calls": e.count} for e in rows[:12]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (the median is reported)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("ablation.json"), help="JSON output")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    train = mnist_data.load_split("train")
    images = mnist_data.scale_images(train.images, "standard")
    table = variants()
    seconds: dict[str, list[float]] = {name: [] for name, _ in table}
    for _ in range(args.rounds):
        for name, config in table:
            seconds[name].append(time_steps(config, images, train.labels, args.steps))
    rows = []
    baseline_epoch = None
    print("| variant | ms/step (median) | s/epoch (est.) | x first row |\n|---|---|---|---|")
    for name, config in table:
        per_step = statistics.median(seconds[name])
        epoch = per_step * (60_000 / config.batch_size)
        baseline_epoch = baseline_epoch or epoch
        rows.append({"variant": name, "ms_per_step": per_step * 1000, "epoch_seconds": epoch, "ratio": epoch / baseline_epoch})
        print(f"| {name} | {per_step * 1000:.1f} | {epoch:.1f} | {epoch / baseline_epoch:.2f} |")
    top = profile_default(images, train.labels, args.steps)
    print("\n| operator (default preset) | share of self CPU time |\n|---|---|")
    for row in top:
        print(f"| `{row['op']}` | {row['self_cpu_share']:.1%} |")
    args.out.write_text(json.dumps({"ablation": rows, "profile": top}, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
