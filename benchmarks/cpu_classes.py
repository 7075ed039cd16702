"""What bf16 autocast and channels-last buy on each class of CPU we can reach from this machine.

A CPU class we do not have is imitated by restricting this one: ``ATEN_CPU_CAPABILITY=avx2`` makes torch's own
kernels use AVX2, and ``ONEDNN_MAX_CPU_ISA=AVX2`` does the same for oneDNN's convolutions, which then have no bf16
instructions and emulate bf16. bf16 autocast is forced on in every bf16 row (bypassing
:func:`mnist_cnn.tooling.runctl.numerics.choose_numerics`, which would refuse it there), so the table shows what choosing it
would cost. Each class runs in its own process; within a process, variants are interleaved over rounds and the
median ms per training step (random batches through ``engine.train_batch``) is reported.

Usage: ``python benchmarks/cpu_classes.py [--rounds 4] [--steps 10] [--out benchmarks/cpu_classes.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
#: name -> environment that restricts this CPU to that class (empty: as it is).
CLASSES = {"native": {}, "AVX2 only (forced)": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}


def measure(rounds: int, steps: int) -> list[dict]:
    """ms per step of ``default`` and ``fast`` in fp32/bf16 x NCHW/channels-last, in this process."""
    import torch

    from mnist_cnn import engine
    from mnist_cnn.presets import get_preset
    from mnist_cnn.recipe import build_parts, model_for
    from mnist_cnn.tooling.runctl.numerics import choose_numerics

    torch.set_flush_denormal(True)
    setups = {}
    for preset in ("default", "fast"):
        for bf16 in (False, True):
            for channels_last in (False, True):
                config = get_preset(preset, bf16=bf16, channels_last=channels_last)
                model = model_for(config, torch.device("cpu"))
                parts = build_parts(config, model, 430, torch.device("cpu"), torch.Generator().manual_seed(0))
                parts.autocast_dtype = torch.bfloat16 if bf16 else None  # forced, even where it is emulated
                images = torch.randn(config.batch_size, 1, 28, 28)
                labels = torch.randint(0, 10, (config.batch_size,))
                setups[(preset, bf16, channels_last)] = (model, parts, images, labels)
    times: dict[tuple, list[float]] = {key: [] for key in setups}
    for _ in range(rounds):
        for key, (model, parts, images, labels) in setups.items():
            model.train()
            for _ in range(2):
                engine.train_batch(model, images, labels, parts)
            started = time.perf_counter()
            for _ in range(steps):
                engine.train_batch(model, images, labels, parts)
            times[key].append((time.perf_counter() - started) / steps * 1000)
    chosen = choose_numerics(True, True, torch.device("cpu"))
    rows = []
    for (preset, bf16, channels_last), values in times.items():
        fp32_nchw = statistics.median(times[(preset, False, False)])
        rows.append(
            {
                "preset": preset,
                "numerics": f"{'bf16 autocast' if bf16 else 'fp32'}, {'channels-last' if channels_last else 'NCHW'}",
                "ms_per_step": statistics.median(values),
                "x_fp32_nchw": statistics.median(values) / fp32_nchw,
                "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
                "chosen_by_numerics": chosen.autocast,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds per class")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant and round")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("cpu_classes.json"), help="JSON output")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.rounds, args.steps)))
        return
    results = {}
    for name, restriction in CLASSES.items():
        env = {**os.environ, **restriction, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
        command = [sys.executable, __file__, "--worker", "--rounds", str(args.rounds), "--steps", str(args.steps)]
        completed = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
        results[name] = json.loads(completed.stdout.strip().splitlines()[-1])
    print("| CPU class | torch kernels | recipe | numerics | ms/step | x fp32 NCHW | autocast_dtype_for chooses |")
    print("|---|---|---|---|---|---|---|")
    for name, rows in results.items():
        for row in rows:
            print(
                f"| {name} | {row['cpu_capability']} | `{row['preset']}` | {row['numerics']} | {row['ms_per_step']:.1f} | "
                f"{row['x_fp32_nchw']:.2f} | {row['chosen_by_numerics']} |"
            )
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
