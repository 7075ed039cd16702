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

from mnist_cnn.config import TrainConfig
from mnist_cnn.presets import get_preset
from mnist_cnn.runs import RunOptions
from mnist_cnn.tooling.runctl.controls import fit_controlled

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
MNIST_TRAIN_IMAGES = 60_000
#: The goals' seeds for the presets; two for each baseline, whose median time is all the ratios need.
DEFAULT_SEEDS = {"seed": 2, "public": 2, "fast": 5, "default": 3, "best": 3}
ALL_RECIPES = ["seed", "public", "fast", "default", "best"]


def recipe(name: str, seed: int) -> TrainConfig:
    """The configuration for a recipe name and seed."""
    if name == "public":
        config = TrainConfig.from_dict({**PUBLIC_RECIPE.to_dict(), "seed": seed})
        config.validate()
        return config
    return get_preset(name, seed=seed)


def worker(name: str, seed: int, device: str, one_epoch: bool = False) -> None:
    """Train one recipe with one seed and print its measurements as JSON on the last line."""
    config = recipe(name, seed)
    if one_epoch:
        config.epochs = 1
    result = fit_controlled(config, RunOptions(device=device, quiet=True))  # $MNIST_CNN_THREADS as the command line reads it
    validation = result.metrics["validation"]
    images = (MNIST_TRAIN_IMAGES - (validation["size"] if validation.get("held_out") else 0)) * config.epochs
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
                "device": result.metrics["device"],
                "numerics": result.metrics.get("numerics"),
                "threads": result.metrics.get("threads"),
                "images_trained": images,
                "train_mflop_per_image": training_flops_per_image(config) / 1e6,
                "peak_rss_mib": round(peak_mib, 1),
            }
        )
    )


def training_flops_per_image(config: TrainConfig) -> float:
    """Floating-point operations of one training image: the forward and backward passes' convolutions and matrix
    products as ``FlopCounterMode`` counts them (a multiply-add counts 2; element-wise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    from mnist_cnn.recipe import model_for

    model = model_for(config, torch.device("cpu"))
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 1, 28, 28)).sum().backward()
    return float(counter.get_total_flops())


def peak_gflops(precision: str) -> tuple[float, str]:
    """An estimate of this CPU's peak GFLOP/s for ``precision`` (``fp32`` or ``bf16-autocast``), and how it was made.

    cores x clock x FLOPs per cycle per core: 32 fp32 FLOPs for two 256-bit FMA pipes (AVX2 CPUs and AMD Zen 4,
    which runs AVX-512 on 256-bit halves), 64 for Intel's two 512-bit FMA units; twice that for bf16 dot products
    (AVX512_BF16) and 1024 bf16 FLOPs for an AMX tile unit. The clock is ``/proc/cpuinfo``'s ``cpu MHz``, which on
    a VM is the nominal clock, not the boost: the share is an upper bound on the true one.
    """
    from mnist_cnn.devices import cpu_flags
    from mnist_cnn.tooling.runctl.numerics import cpu_class, cpu_model
    from mnist_cnn.tooling.runctl.threads import usable_cores

    info = Path("/proc/cpuinfo").read_text(errors="replace") if Path("/proc/cpuinfo").exists() else ""
    mhz = next((float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz")), 0.0)
    kind, intel = cpu_class(cpu_flags(info)), "Intel" in cpu_model(info)
    fp32 = 64 if kind.startswith(("avx512", "amx")) and intel else 32
    per_cycle = fp32
    if precision.startswith("bf16"):
        per_cycle = 1024 if kind == "amx-bf16" else 2 * fp32 if kind == "avx512-bf16" else fp32
    cores = usable_cores()
    how = f"{cores} cores x {mhz / 1000:.2f} GHz x {per_cycle} FLOP/cycle ({kind}, {precision})"
    return cores * mhz / 1000 * per_cycle, how


def run_one(name: str, seed: int, device: str, extra: list[str] | None = None, env: dict | None = None) -> dict:
    """Run one worker subprocess on this checkout's own ``src/`` (whatever checkout pip's editable install points at)."""
    env = env or dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, __file__, "--worker", name, str(seed), "--device", device, *(extra or [])],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if completed.returncode != 0:
        raise SystemExit(f"benchmark run {name} seed {seed} failed:\n{completed.stderr[-2000:]}")
    row = json.loads(completed.stdout.strip().splitlines()[-1])
    row["process_seconds"] = time.perf_counter() - started
    return row


#: The busy neighbour of the contended case: one process spinning on one core, as a busy browser tab or a second
#: notebook would.
BUSY_LOOP = "while True: pass"


def epoch_seconds(policy: str, busy: bool) -> dict:
    """One epoch of ``default`` in its own process under a thread ``policy``, alone or beside a busy process."""
    neighbour = subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) if busy else None
    try:
        if neighbour is not None:
            time.sleep(0.5)  # let it get going, as a program already running would be
        env = {**os.environ, "MNIST_CNN_THREADS": policy}
        row = run_one("default", 0, "cpu", extra=["--one-epoch"], env=env)
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
    return {"policy": policy, "busy": busy, "train_seconds": row["train_seconds"], "threads": row["threads"]}


def contention(repeats: int) -> tuple[list[dict], list[dict]]:
    """The contended case: one epoch of ``default`` alone and beside a busy process, under torch's own thread
    count (what training did before the adaptive policy) and under the adaptive policy, interleaved."""
    fixed = str(torch.get_num_threads())
    rows = []
    for _ in range(repeats):
        for policy in (fixed, "adaptive"):
            for busy in (False, True):
                rows.append(epoch_seconds(policy, busy))
                print(f"contention: threads {policy:>8}, {'busy' if busy else 'alone'}: {rows[-1]['train_seconds']:.2f}s", flush=True)
    table = []
    for policy in (fixed, "adaptive"):
        alone = statistics.median(r["train_seconds"] for r in rows if r["policy"] == policy and not r["busy"])
        busy = statistics.median(r["train_seconds"] for r in rows if r["policy"] == policy and r["busy"])
        table.append(
            {
                "threads": policy if policy == "adaptive" else f"{policy} (torch's default)",
                "alone_s": alone,
                "busy_s": busy,
                "busy_over_alone": busy / alone,
            }
        )
    for row in table:
        row["alone_over_torch_default"] = row["alone_s"] / table[0]["alone_s"]
    return table, rows


def format_contention(table: list[dict]) -> str:
    """The contended case as a Markdown table."""
    lines = [
        "| one epoch of `default`, threads | alone (s) | beside one busy process (s) | busy / alone | alone x torch's default |",
        "|---|---|---|---|---|",
    ]
    for row in table:
        lines.append(
            f"| {row['threads']} | {row['alone_s']:.2f} | {row['busy_s']:.2f} | {row['busy_over_alone']:.2f} | "
            f"{row['alone_over_torch_default']:.2f} |"
        )
    return "\n".join(lines)


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
                **throughput(runs, medians[name]),
            }
        )
    return table


def throughput(runs: list[dict], seconds: float) -> dict:
    """Images per second at the median training time, the GFLOP/s that makes, and its share of the estimated peak."""
    if "images_trained" not in runs[0]:
        return {}
    images_per_second = runs[0]["images_trained"] / seconds
    gflops = images_per_second * runs[0]["train_mflop_per_image"] / 1000
    row = {"images_per_second": images_per_second, "gflops": gflops}
    if runs[0].get("device", "cpu") == "cpu":
        peak, how = peak_gflops(runs[0]["precision"])
        row.update(peak_gflops=peak, peak_share=gflops / peak if peak else None, peak_how=how)
    return row


def format_table(table: list[dict]) -> str:
    """The summary as a Markdown table."""

    def ratio(value: float | None) -> str:
        return "—" if value is None else f"{value:.3f}"

    def accuracy(value: float | None) -> str:
        return "—" if value is None else f"{value:.4f}"

    def share(value: float | None) -> str:
        return "—" if value is None else f"{value:.0%}"

    lines = [
        "| recipe | runs | val accuracy mean | val min | test accuracy mean | test min | train s (median) | x seed | x public "
        "| images/s | GFLOP/s | share of peak | peak RSS MiB | precision |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table:
        lines.append(
            f"| {row['recipe']} | {row['runs']} | {accuracy(row.get('val_accuracy_mean'))} | {accuracy(row.get('val_accuracy_min'))} | "
            f"{row['accuracy_mean']:.4f} | {row['accuracy_min']:.4f} | "
            f"{row['train_seconds_median']:.2f} | {ratio(row['ratio_to_seed'])} | {ratio(row['ratio_to_public'])} | "
            f"{row.get('images_per_second', 0):.0f} | {row.get('gflops', 0):.1f} | {share(row.get('peak_share'))} | "
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
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "gpu": gpu,
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=ALL_RECIPES, choices=ALL_RECIPES, help="what to run")
    parser.add_argument("--seeds", type=int, help="seeds per recipe (default: 3, or 5 for public and fast)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results.json"), help="JSON output")
    parser.add_argument("--device", default="cpu", help="where every recipe trains (cpu, cuda, auto)")
    parser.add_argument("--contention-repeats", type=int, default=2, help="rounds of the contended case (0 to skip it)")
    parser.add_argument("--one-epoch", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", nargs=2, metavar=("RECIPE", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), args.device, args.one_epoch)
        return
    rows = []
    # Interleave recipes seed by seed, so a slow patch of the machine hits every recipe alike.
    most = max(args.seeds or DEFAULT_SEEDS[name] for name in args.recipes)
    for seed in range(most):
        for name in args.recipes:
            if seed < (args.seeds or DEFAULT_SEEDS[name]):
                row = run_one(name, seed, args.device)
                rows.append(row)
                print(
                    f"{name:>8} seed {seed}: validation {row['val_accuracy']:.4f}, test {row['test_accuracy']:.4f}, "
                    f"training {row['train_seconds']:.2f}s",
                    flush=True,
                )
    table = summarise(rows, args.recipes)
    contended, contended_runs = contention(args.contention_repeats) if args.contention_repeats and args.device == "cpu" else ([], [])
    print()
    print(format_table(table))
    if contended:
        print()
        print(format_contention(contended))
    results = {"machine": machine(), "summary": table, "runs": rows, "contention": contended, "contention_runs": contended_runs}
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
