"""The opt-in adaptive thread policy against the default fixed threads, alone and beside one busy process.

One epoch of ``default`` per process (``benchmark.epoch_seconds``), interleaved: for each round, the fixed
policy (torch's own thread count, the default) and the adaptive one, each alone and beside a ``while True: pass``
process. Reports the medians per policy and case and writes ``benchmarks/contention.json``. Run it on an
otherwise quiet machine: the busy neighbour is the only load it means to measure.

Usage: ``python benchmarks/contention.py [--rounds 2]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmark import contention, format_contention, machine  # benchmarks/ is the script's own folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the four one-epoch runs")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("contention.json"), help="JSON output")
    args = parser.parse_args()
    table, runs = contention(args.rounds)
    print(format_contention(table))
    args.out.write_text(json.dumps({"machine": machine(), "contention": table, "runs": runs}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
