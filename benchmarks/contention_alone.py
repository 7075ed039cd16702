"""The adaptive thread policy alone on the machine, against torch's default threads: is it any slower?

One epoch of ``default`` per process (``benchmark.epoch_seconds``), torch's default thread count and the
adaptive policy alternating which goes first in each round, so drift of the machine hits both alike. Reports the
medians, their ratio and the median of the per-round ratios; ``benchmarks/contention_alone.json`` keeps every run
with the thread changes the policy made.

Usage: ``python benchmarks/contention_alone.py [--rounds 6]``
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from benchmark import epoch_seconds  # benchmarks/ is the script's own folder, so this resolves when run as a script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6, help="rounds of one epoch under each policy")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("contention_alone.json"), help="JSON output")
    args = parser.parse_args()
    fixed = str(torch.get_num_threads())
    rows = []
    for round_index in range(args.rounds):
        for policy in (fixed, "adaptive") if round_index % 2 == 0 else ("adaptive", fixed):
            row = epoch_seconds(policy, busy=False)
            rows.append(row)
            print(f"round {round_index}: threads {policy:>8}: {row['train_seconds']:.2f}s {row['threads']['changes']}", flush=True)
    default = [r["train_seconds"] for r in rows if r["policy"] == fixed]
    adaptive = [r["train_seconds"] for r in rows if r["policy"] == "adaptive"]
    per_round = [a / d for a, d in zip(adaptive, default, strict=True)]
    summary = {
        "torch_default_median_s": statistics.median(default),
        "adaptive_median_s": statistics.median(adaptive),
        "ratio_of_medians": statistics.median(adaptive) / statistics.median(default),
        "median_per_round_ratio": statistics.median(per_round),
    }
    print(json.dumps(summary, indent=2))
    args.out.write_text(json.dumps({"summary": summary, "runs": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
