"""CPU numerics: what bf16 autocast, channels-last, torch.compile, a batch-norm-free VGG and the thread/wait policy buy per training step.

Times real training steps (MNIST in memory, each recipe's optimizer, schedule and augmentation, through
``engine.train_batch``) on this CPU, interleaving variants over several rounds and reporting the median
milliseconds per step and images per second, with the ratio to the first row of each block:

1. the ``default`` and ``fast`` recipes' steps in fp32 / bf16 autocast, NCHW / channels-last;
2. ``torch.compile`` (inductor, default mode) of the ``default`` model in the best numerics from (1), in a
   subprocess with a hard time limit: the first step including compilation, then steady ms/step;
3. the ``default`` recipe without batch norm, in the best numerics from (1);
4. contention: one slice of the ``default`` step alone and beside one busy process (``while True: pass``,
   started and killed here), with torch's default thread count, with one thread, and with
   ``OMP_WAIT_POLICY=PASSIVE``; each in its own subprocess, since OpenMP reads the variable when it starts.

It also counts the ``default`` network's FLOPs (``torch.utils.flop_counter``) to give the achieved GFLOP/s,
times a large matmul as an attainable peak, and records the CPU's model, flags and torch's view of it.
No preset is changed: the variants are ``dataclasses.replace`` copies of the presets.

Usage: ``python benchmarks/cpu_numerics.py [--quick] [--steps 40] [--rounds 5] [--out benchmarks/cpu_numerics.json]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from mnist_cnn import data as mnist_data
from mnist_cnn.config import TrainConfig
from mnist_cnn.engine import train_batch
from mnist_cnn.model import build_model
from mnist_cnn.presets import get_preset
from mnist_cnn.recipe import build_parts, model_for

CPU = torch.device("cpu")
FLAGS_OF_INTEREST = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512_vnni", "avx512f", "avx2", "fma")
BUSY = "while True: pass"


# ----------------------------------------------------------------------------------------------------------
# The machine


def cpu_info() -> dict:
    """Model name, flags of interest, torch's capability and threads."""
    model, flags = platform.processor() or "unknown", set()
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Model name":
                model = value.strip()
            elif key.strip() == "Flags":
                flags = set(value.split())
    except OSError:
        pass
    if not flags and Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.partition(":")[2].split())
                break
    family = model_id = None
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "cpu family" and family is None:
                family = int(value)
            elif key.strip() == "model" and model_id is None:
                model_id = int(value)
    return {
        "model_name": model,
        "cpu_family": family,
        "cpu_model": model_id,
        "logical_cpus": os.cpu_count(),
        "flags": {flag: flag in flags for flag in FLAGS_OF_INTEREST},
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_num_threads": torch.get_num_threads(),
        "mkldnn_bf16_supported": bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()),
    }


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Attainable GFLOP/s of one large square matmul in ``dtype`` (best of ``repeats``)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


def network_flops(config: TrainConfig) -> dict:
    """FLOPs (2 per multiply-add) of one training step's forward and forward+backward, counted in fp32."""
    torch.manual_seed(0)
    model = build_model(config.arch, **config.model_options).train()
    x = torch.randn(config.batch_size, 1, 28, 28)
    y = torch.randint(0, 10, (config.batch_size,))
    with FlopCounterMode(display=False) as forward_counter:
        logits = model(x)
    forward = forward_counter.get_total_flops()
    with FlopCounterMode(display=False) as step_counter:
        torch.nn.functional.cross_entropy(model(x), y).backward()
    del logits
    return {"batch": config.batch_size, "forward_flops": forward, "step_flops_counted": step_counter.get_total_flops()}


# ----------------------------------------------------------------------------------------------------------
# Timing


def load_images() -> tuple[torch.Tensor, torch.Tensor]:
    train = mnist_data.load_split("train")
    return mnist_data.scale_images(train.images, "standard"), train.labels


def prepare(config: TrainConfig, images: torch.Tensor, labels: torch.Tensor, compile_model: bool = False):
    """Model, parts and an endless batch iterator for ``config`` (the same set-up as benchmarks/ablation.py)."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = model_for(config, CPU)
    parts = build_parts(config, model, 60_000 // config.batch_size, CPU, generator)
    model.train()
    step_model = torch.compile(model) if compile_model else model

    def batches():
        while True:
            yield from mnist_data.InMemoryBatches(images, labels, config.batch_size, shuffle=True, generator=generator)

    return step_model, parts, batches()


def time_steps(config: TrainConfig, images: torch.Tensor, labels: torch.Tensor, steps: int, warmup: int = 3) -> float:
    """Seconds per training step over ``steps`` steps after ``warmup`` untimed steps."""
    model, parts, batches = prepare(config, images, labels)
    for _ in range(warmup):
        train_batch(model, *next(batches), parts)
    started = time.perf_counter()
    for _ in range(steps):
        train_batch(model, *next(batches), parts)
    return (time.perf_counter() - started) / steps


def numerics_variants(name: str) -> list[tuple[str, TrainConfig]]:
    """The recipe's step in fp32/bf16 x NCHW/channels-last (the first is the fp32 NCHW baseline)."""
    preset = get_preset(name)
    out = []
    for bf16 in (False, True):
        for channels_last in (False, True):
            label = f"{'bf16 autocast' if bf16 else 'fp32'}, {'channels-last' if channels_last else 'NCHW'}"
            out.append((label, dataclasses.replace(preset, bf16=bf16, channels_last=channels_last)))
    return out


def interleaved(blocks: dict[str, list[tuple[str, TrainConfig]]], images, labels, steps: int, rounds: int) -> list[dict]:
    """Time every variant of every block once per round, rounds interleaved; median ms/step per variant."""
    seconds: dict[tuple[str, str], list[float]] = {(block, name): [] for block, table in blocks.items() for name, _ in table}
    for _ in range(rounds):
        for block, table in blocks.items():
            for name, config in table:
                seconds[(block, name)].append(time_steps(config, images, labels, steps))
    rows = []
    for block, table in blocks.items():
        baseline = None
        for name, config in table:
            per_step = statistics.median(seconds[(block, name)])
            baseline = baseline or per_step
            rows.append(
                {
                    "block": block,
                    "variant": name,
                    "batch": config.batch_size,
                    "bf16": config.bf16,
                    "channels_last": config.channels_last,
                    "ms_per_step": per_step * 1000,
                    "ms_per_step_all": [s * 1000 for s in seconds[(block, name)]],
                    "images_per_s": config.batch_size / per_step,
                    "ratio": per_step / baseline,
                }
            )
    return rows


# ----------------------------------------------------------------------------------------------------------
# Children (run in their own process): compile, and one contention slice


def config_from_json(text: str) -> TrainConfig:
    return TrainConfig.from_dict(json.loads(text))


def child_compile(config: TrainConfig, steps: int) -> dict:
    """First compiled step (compilation included) and steady ms/step, plus the eager step in the same process."""
    images, labels = load_images()
    eager = statistics.median(time_steps(config, images, labels, steps) for _ in range(2))
    model, parts, batches = prepare(config, images, labels, compile_model=True)
    started = time.perf_counter()
    train_batch(model, *next(batches), parts)
    first = time.perf_counter() - started
    started = time.perf_counter()
    train_batch(model, *next(batches), parts)  # a second step may recompile (e.g. a dynamic-shape guard)
    second = time.perf_counter() - started
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(steps):
            train_batch(model, *next(batches), parts)
        runs.append((time.perf_counter() - started) / steps)
    return {
        "first_step_s_including_compile": first,
        "second_step_s": second,
        "compiled_ms_per_step": statistics.median(runs) * 1000,
        "compiled_ms_per_step_all": [r * 1000 for r in runs],
        "eager_ms_per_step_same_process": eager * 1000,
        "graph_breaks": sum(torch._dynamo.utils.counters["graph_break"].values()),
        "unique_graphs": int(torch._dynamo.utils.counters["stats"]["unique_graphs"]),
    }


def child_slice(config: TrainConfig, steps: int, threads: int | None) -> dict:
    """One slice of ``steps`` training steps (after 3 warm-up steps); wall seconds."""
    if threads:
        torch.set_num_threads(threads)
    images, labels = load_images()
    seconds = time_steps(config, images, labels, steps)
    return {"ms_per_step": seconds * 1000, "slice_s": seconds * steps, "threads": torch.get_num_threads()}


def run_child(args: list[str], env: dict | None = None, timeout: float | None = None) -> dict:
    """Run this script as a child; its last stdout line is JSON. Errors come back as ``{"error": ...}``."""
    command = [sys.executable, __file__, *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"exceeded the {timeout:.0f} s limit"}
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return {"error": (lines[-1] if lines else f"exit status {done.returncode}")[:300]}
    return json.loads(done.stdout.strip().splitlines()[-1])


#: Nominal vector throughput of the AMD cores this has run on, by (family, model): FLOP per cycle per core in fp32
#: and in bf16 (None where bf16 has no instruction), and the microarchitecture in words.
NOMINAL = {
    (25, 17): (
        32,
        64,
        "Zen 4 (EPYC 9004 'Genoa'): AVX-512 on two 256-bit FMA pipes, 16 fp32 FMAs = 32 FLOP per cycle; "
        "AVX512_BF16 (VDPBF16PS) does 2 bf16 products per fp32 lane, 64 FLOP per cycle",
    ),
    (25, 1): (32, None, "Zen 3 (EPYC 7003 'Milan'): AVX2 on two 256-bit FMA pipes, 16 fp32 FMAs = 32 FLOP per cycle; no bf16 instruction"),
}
CLOCK_GHZ = 3.7


def nominal_peak(info: dict, cores: int) -> dict:
    """The nominal peak GFLOP/s of this CPU where its microarchitecture is known here, else ``None`` with the reason."""
    known = NOMINAL.get((info.get("cpu_family"), info.get("cpu_model")))
    if known is None:
        reason = f"no nominal peak assumed for family {info.get('cpu_family')} model {info.get('cpu_model')}"
        return {"assumptions": reason, "fp32_gflops": None, "bf16_gflops": None}
    fp32, bf16, words = known
    return {
        "assumptions": f"AMD family {info['cpu_family']} model {info['cpu_model']} = {words}; {cores} cores (1 thread each); "
        f"an assumed {CLOCK_GHZ} GHz all-core clock (the VM reports none)",
        "fp32_gflops": cores * CLOCK_GHZ * fp32,
        "bf16_gflops": None if bf16 is None else cores * CLOCK_GHZ * bf16,
    }


def contention(config: TrainConfig, steps: int, rounds: int) -> list[dict]:
    """Each policy alone and beside one busy process, each slice in a fresh subprocess, interleaved over rounds."""
    policies = [
        ("torch default threads", None, {}),
        ("torch.set_num_threads(1)", 1, {}),
        ("OMP_WAIT_POLICY=PASSIVE", None, {"OMP_WAIT_POLICY": "PASSIVE"}),
        ("GOMP_SPINCOUNT=10000 (libgomp spins ~10k instead of ~300k before sleeping)", None, {"GOMP_SPINCOUNT": "10000"}),
    ]
    results: dict[tuple[str, str], list[float]] = {}
    threads_seen: dict[str, int] = {}
    for _ in range(rounds):
        for name, threads, env in policies:
            for busy in (False, True):
                hog = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
                try:
                    if hog:
                        time.sleep(0.5)
                    child = ["--child", "slice", "--config", json.dumps(config.to_dict()), "--steps", str(steps)]
                    if threads:
                        child += ["--threads", str(threads)]
                    out = run_child(child, env=env, timeout=600)
                finally:
                    if hog:
                        hog.kill()
                        hog.wait()
                if "error" in out:
                    raise RuntimeError(f"contention child failed: {out['error']}")
                results.setdefault((name, "busy" if busy else "alone"), []).append(out["slice_s"])
                threads_seen[name] = out["threads"]
    rows = []
    for name, _, _ in policies:
        alone = statistics.median(results[(name, "alone")])
        busy = statistics.median(results[(name, "busy")])
        rows.append(
            {
                "policy": name,
                "threads": threads_seen[name],
                "steps": steps,
                "alone_s": alone,
                "busy_s": busy,
                "alone_all": results[(name, "alone")],
                "busy_all": results[(name, "busy")],
                "busy_over_alone": busy / alone,
            }
        )
    base = rows[0]["alone_s"]
    for row in rows:
        row["alone_over_default_alone"] = row["alone_s"] / base
    return rows


# ----------------------------------------------------------------------------------------------------------


def print_tables(result: dict) -> None:
    """The markdown tables and the FLOP/peak lines."""
    info, peak, flops = result["cpu"], result["peak"], result["flops"]
    where = f"{info['model_name']} ({info['torch_cpu_capability']}, {info['torch_num_threads']} threads)"
    print(f"\nTraining step on {where}, median of {result['_rounds']} interleaved rounds:\n")
    print("| recipe | numerics | ms/step | images/s | x fp32 NCHW |\n|---|---|---|---|---|")
    for row in result["numerics"]:
        recipe = f"`{row['block']}` (batch {row['batch']})"
        print(f"| {recipe} | {row['variant']} | {row['ms_per_step']:.1f} | {row['images_per_s']:.0f} | {row['ratio']:.2f} |")
    print("\n| variant | ms/step | images/s | x with batch norm |\n|---|---|---|---|")
    for row in result["batch_norm"]:
        print(f"| {row['variant']} | {row['ms_per_step']:.1f} | {row['images_per_s']:.0f} | {row['ratio']:.2f} |")
    print("\ntorch.compile (inductor, default mode) of the `default` model:")
    if not result["compile"]:
        print("  not measured (--no-compile)")
    for row in result["compile"]:
        if "error" in row:
            print(f"  {row['numerics']}: not measured: {row['error']}")
            continue
        eager, steady = row["eager_ms_per_step_same_process"], row["compiled_ms_per_step"]
        print(
            f"  {row['numerics']}, {row['inductor_cache']} inductor cache: "
            f"first step including compilation {row['first_step_s_including_compile']:.1f} s, "
            f"second {row['second_step_s']:.2f} s; steady {steady:.1f} ms/step against eager {eager:.1f} (x{steady / eager:.2f}); "
            f"{row['unique_graphs']} graphs, {row['graph_breaks']} graph breaks"
        )
    steps, rounds = result["_slice"]
    print(f"\nContention: {steps} steps of `default` (bf16, channels-last), each in its own process, median of {rounds}:\n")
    print("| policy | threads | alone (s) | beside one busy process (s) | busy / alone | alone x default |")
    print("|---|---|---|---|---|---|")
    for row in result["contention"]:
        print(
            f"| {row['policy']} | {row['threads']} | {row['alone_s']:.2f} | {row['busy_s']:.2f} | {row['busy_over_alone']:.2f} | "
            f"{row['alone_over_default_alone']:.2f} |"
        )
    step = flops["step_flops_3x_forward"]
    print(
        f"\nFLOPs of the `default` VGG at batch {flops['batch']}: forward {flops['forward_flops'] / 1e9:.2f} GFLOP, "
        f"step ~3x = {step / 1e9:.2f} GFLOP (counted forward+backward {flops['step_flops_counted'] / 1e9:.2f})."
    )
    achieved = ", ".join(f"{k} {v:.0f}" for k, v in flops["achieved_gflops_default_by_numerics"].items())
    print(f"Achieved GFLOP/s of the default step: {achieved}")
    matmul = peak["attainable_matmul_gflops_2048"]
    nominal = ", ".join(f"{kind} {peak[kind + '_gflops']:.0f}" for kind in ("fp32", "bf16") if peak[kind + "_gflops"] is not None)
    print(f"Peak estimate: {nominal or 'none'} GFLOP/s ({peak['assumptions']})")
    print(f"Attainable (2048^3 matmul): fp32 {matmul['fp32']:.0f}, bf16 {matmul['bf16']:.0f} GFLOP/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 8 steps, 1 round, 1 contention round, 20-step slices")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per variant and round (numerics, BN-free, compile)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds for the numerics (the median is reported)")
    parser.add_argument("--slice-steps", type=int, default=60, help="steps in one contention slice")
    parser.add_argument("--contention-rounds", type=int, default=3, help="rounds of the eight contention slices (median reported)")
    parser.add_argument("--compile-limit", type=float, default=240.0, help="seconds before the compile child is killed")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurement")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("cpu_numerics.json"), help="JSON output")
    parser.add_argument("--child", choices=("compile", "slice"), help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    if args.child:
        config = config_from_json(args.config)
        result = child_compile(config, args.steps) if args.child == "compile" else child_slice(config, args.steps, args.threads)
        print(json.dumps(result))
        return
    if args.quick:
        args.steps, args.rounds, args.slice_steps, args.contention_rounds = 8, 1, 20, 1

    started = time.perf_counter()
    info = cpu_info()
    name = info["model_name"]
    print(f"CPU: {name} (family {info['cpu_family']}, model {info['cpu_model']}), {info['logical_cpus']} logical CPUs")
    print(f"torch {info['torch']}, capability {info['torch_cpu_capability']}, threads {info['torch_num_threads']}, flags {info['flags']}")
    images, labels = load_images()

    # 1 + 3: numerics of default and fast, then BN-free default in the best numerics (one interleaved run each)
    blocks = {"default": numerics_variants("default"), "fast": numerics_variants("fast")}
    numerics = interleaved(blocks, images, labels, args.steps, args.rounds)
    best = min((row for row in numerics if row["block"] == "default"), key=lambda row: row["ms_per_step"])
    best_default = dataclasses.replace(get_preset("default"), bf16=best["bf16"], channels_last=best["channels_last"])
    no_bn = dataclasses.replace(best_default, model_options={"hidden_units": 16, "batch_norm": False})
    bn_rows = interleaved(
        {"batch norm": [(f"default, {best['variant']}", best_default), (f"default without batch norm, {best['variant']}", no_bn)]},
        images,
        labels,
        args.steps,
        args.rounds,
    )

    # 2: torch.compile in a child with a hard limit, in the best numerics (cold on-disk cache, then warm in a second process)
    # and, for CPUs without bf16, in fp32 channels-last (cold cache)
    compiled: list[dict] = []
    fp32 = dataclasses.replace(best_default, bf16=False, channels_last=True)
    if not args.no_compile:
        with tempfile.TemporaryDirectory(prefix="inductor-") as cold, tempfile.TemporaryDirectory(prefix="inductor-") as other:
            runs = [(best["variant"], best_default, cold, "cold"), (best["variant"], best_default, cold, "warm (second process)")]
            if fp32 != best_default:
                runs.append(("fp32, channels-last", fp32, other, "cold"))
            for label, config, cache, state in runs:
                child = ["--child", "compile", "--config", json.dumps(config.to_dict()), "--steps", str(args.steps)]
                out = run_child(child, env={"TORCHINDUCTOR_CACHE_DIR": cache}, timeout=args.compile_limit)
                compiled.append({"numerics": label, "inductor_cache": state, "limit_s": args.compile_limit, **out})

    # 4: contention
    slices = contention(get_preset("default"), args.slice_steps, args.contention_rounds)

    # FLOPs and peak
    flops = network_flops(get_preset("default"))
    step_flops = 3 * flops["forward_flops"]
    achieved = {row["variant"]: step_flops / (row["ms_per_step"] / 1000) / 1e9 for row in numerics if row["block"] == "default"}
    attainable = {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)}
    peak = {**nominal_peak(info, os.cpu_count() or 1), "attainable_matmul_gflops_2048": attainable}

    result = {
        "what": "training-step timings (ms/step) of benchmarks/cpu_numerics.py; no preset changed",
        "cpu": info,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "child", "config", "threads")},
        "numerics": numerics,
        "batch_norm": bn_rows,
        "compile": compiled,
        "contention": slices,
        "flops": {**flops, "step_flops_3x_forward": step_flops, "achieved_gflops_default_by_numerics": achieved},
        "peak": peak,
        "wall_s": None,
        "_best": best["variant"],
        "_rounds": args.rounds,
        "_slice": (args.slice_steps, args.contention_rounds),
    }

    print_tables(result)
    result["wall_s"] = time.perf_counter() - started
    for key in ("_best", "_rounds", "_slice"):
        result.pop(key)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out} ({result['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
