"""The VGG-style design space by cost: layouts of the `default` recipe's network, trained and judged on validation.

Every candidate keeps what makes the network VGG-style (3x3 convolutions with ReLU, max-pooling between blocks, batch
norm once per block, one linear head) and the `default` recipe (one-cycle Nesterov SGD, label smoothing, small
random affine augmentation, the whitened first convolution); what varies is what sets the cost: the channels of each
block, the convolutions per block, a stem (one full-resolution convolution and its own pool, so that both blocks run
on a quarter of the pixels), and the number of epochs. See :data:`CANDIDATES`.

Design: for each seed, every candidate is trained once in this process, in a fixed order, so that the machine's
drift falls on all of them alike; each candidate's time is also taken as a ratio to the time of the reference
(:data:`REFERENCE`, the seed's layout with batch norm) in the same round, and the median of those ratios is
reported beside the median seconds. Only the validation split is read for the summary (``fit`` measures its test
slice too; it is not recorded here). Training GFLOP are counted by ``FlopCounterMode`` as in ``benchmark.py``.

Usage: ``python benchmarks/design_space.py [--seeds 3] [--only NAME ...] [--out FILE]``; by default one file per CPU
class (``benchmarks/design_space_zen3.json``...), which ``frontier.py`` draws.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from mnist_cnn.presets import get_preset
from mnist_cnn.runs import RunOptions, fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark import machine, training_flops_per_image  # noqa: E402
from cpu_numerics import NOMINAL, cpu_info  # noqa: E402

HERE = Path(__file__).resolve().parent
REFERENCE = "16x3|16x3 e3"
#: The training split: the 60,000 training images less the 5,000 of the validation split.
TRAIN_IMAGES = 55_000


def _vgg(hidden: int, block2: int, convs: int = 3, stem: int = 0) -> dict[str, Any]:
    options: dict[str, Any] = {"hidden_units": hidden, "batch_norm": True, "batch_norm_at": "block"}
    if block2 != hidden:
        options["block2_units"] = block2
    if convs != 3:
        options["convs_per_block"] = convs
    if stem:
        options["stem_units"] = stem
    return options


#: name -> fields replaced in the `default` preset. The first, the time reference, is the seed's layout (three
#: convolutions of 16 channels per block, at 28x28 and 14x14) with batch norm once per block.
CANDIDATES: dict[str, dict[str, Any]] = {
    REFERENCE: {"model_options": _vgg(16, 16)},
    "16x2|16x2 e3": {"model_options": _vgg(16, 16, convs=2)},
    "stem16|16x2|32x2 e3": {"model_options": _vgg(16, 32, convs=2, stem=16)},
    "stem16|16x2|32x2 e4": {"model_options": _vgg(16, 32, convs=2, stem=16), "epochs": 4},
    "stem16|16x2|32x2 e5": {"model_options": _vgg(16, 32, convs=2, stem=16), "epochs": 5},
    "stem16|16x1|32x1 e4": {"model_options": _vgg(16, 32, convs=1, stem=16), "epochs": 4},
    "stem16|16x3|32x3 e3": {"model_options": _vgg(16, 32, convs=3, stem=16)},
    "stem16|24x2|48x2 e3": {"model_options": _vgg(24, 48, convs=2, stem=16)},
}


def cpu_tag(info: dict[str, Any]) -> str:
    """A short name for this CPU class in file names: ``zen3``, ``zen4`` where known, else ``family25-model1`` or ``cpu``."""
    known = NOMINAL.get((info.get("cpu_family"), info.get("cpu_model")))
    if known is not None:
        return known[2].split(" (")[0].lower().replace(" ", "")
    if info.get("cpu_family") is not None:
        return f"family{info['cpu_family']}-model{info['cpu_model']}"
    return "cpu"


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per candidate: validation mean, minimum and standard deviation, median seconds, median ratio to the reference."""
    reference = {r["seed"]: r["train_seconds"] for r in runs if r["name"] == REFERENCE}
    rows = []
    for name in dict.fromkeys(r["name"] for r in runs):
        mine = [r for r in runs if r["name"] == name]
        vals = [r["val_accuracy"] for r in mine]
        ratios = [r["train_seconds"] / reference[r["seed"]] for r in mine if r["seed"] in reference]
        rows.append(
            {
                "name": name,
                "changes": mine[0]["changes"],
                "runs": len(mine),
                "val_mean": statistics.fmean(vals),
                "val_min": min(vals),
                "val_sd": statistics.stdev(vals) if len(vals) > 1 else None,
                "train_seconds_median": statistics.median(r["train_seconds"] for r in mine),
                "ratio_to_reference_median": statistics.median(ratios) if ratios else None,
                "train_gflop": mine[0]["train_gflop"],
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The summary as a Markdown table."""
    lines = [
        "| layout (stem \\| block 1 \\| block 2), epochs | runs | validation mean (min) | sd | seconds (median) "
        "| x reference time | training GFLOP |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        sd = f"{row['val_sd']:.4f}" if row["val_sd"] is not None else "-"
        ratio = f"{row['ratio_to_reference_median']:.2f}" if row["ratio_to_reference_median"] is not None else "-"
        name = row["name"].replace("|", "\\|")
        lines.append(
            f"| {name} | {row['runs']} | {row['val_mean']:.4f} ({row['val_min']:.4f}) | {sd} | "
            f"{row['train_seconds_median']:.1f} | {ratio} | {row['train_gflop']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per candidate (42, 43, ...)")
    parser.add_argument("--only", nargs="*", choices=list(CANDIDATES), help="these candidates only (the reference is always run)")
    parser.add_argument("--train-size", type=int, help="training images per run (default: all 55,000; smaller for a smoke run)")
    parser.add_argument("--out", type=Path, help="where the runs and the summary are written (default: benchmarks/design_space_<CPU>.json)")
    args = parser.parse_args(argv)
    cpu = cpu_info()
    out = args.out or HERE / f"design_space_{cpu_tag(cpu)}.json"
    names = [REFERENCE, *[n for n in CANDIDATES if n != REFERENCE and (not args.only or n in args.only)]]
    # FLOPs per training image depend on the layout only: counted once per candidate, outside the timed rounds
    flops = {name: training_flops_per_image(get_preset("default", **CANDIDATES[name])) for name in names}
    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    for seed in range(42, 42 + args.seeds):
        for name in names:
            config = get_preset("default", seed=seed, train_size=args.train_size, **CANDIDATES[name])
            result = fit(config, RunOptions(quiet=True))
            train_images = config.train_size or TRAIN_IMAGES
            runs.append(
                {
                    "name": name,
                    "seed": seed,
                    "changes": CANDIDATES[name],
                    "val_accuracy": result.metrics["val_accuracy"],
                    "train_seconds": result.metrics["train_seconds"],
                    "precision": result.metrics["precision"],
                    "train_gflop": config.epochs * train_images * flops[name] / 1e9,
                }
            )
            print(f"seed {seed} {name:>22}: validation {runs[-1]['val_accuracy']:.4f} in {runs[-1]['train_seconds']:.1f} s", flush=True)
    rows = summarise(runs)
    where = {**machine(), "cpu_family": cpu["cpu_family"], "cpu_model": cpu["cpu_model"], "flags": cpu["flags"]}
    report = {"machine": where, "seeds": args.seeds, "wall_seconds": time.perf_counter() - started, "summary": rows, "runs": runs}
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(format_table(rows))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
