"""The accuracy frontier: validation and test accuracy against training FLOPs and seconds, for every preset and ladder step.

Reads ``benchmarks/results.json`` (the presets and the seed and public baselines, from ``benchmark.py``), every
``benchmarks/ladder_*.json`` (the ladder's steps, from ``ladder.py``; validation only) and every
``benchmarks/design_space_*.json`` (VGG layouts, from ``design_space.py``; validation only), and draws two panels
sharing the accuracy axis. Presets are drawn with their validation mean (filled) and test mean (open) joined
by a line, so the one-time test measurement is never mistaken for what the recipe was chosen on.

Usage: ``python benchmarks/frontier.py [--results FILE] [--ladder FILE ...] [--design FILE ...] [--out docs/images/frontier.png]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

HERE = Path(__file__).resolve().parent
COLOURS = {"seed": "tab:gray", "public": "tab:brown", "fast": "tab:blue", "default": "tab:green", "best": "tab:purple"}


def preset_points(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One point per recipe of ``results.json``: training GFLOP, median seconds, validation and test means."""
    points = []
    for row in results["summary"]:
        runs = [r for r in results["runs"] if r["recipe"] == row["recipe"]]
        if not runs or "train_mflop_per_image" not in runs[0]:
            continue
        gflop = runs[0]["images_trained"] * runs[0]["train_mflop_per_image"] / 1000
        points.append(
            {
                "name": row["recipe"],
                "gflop": gflop,
                "seconds": row["train_seconds_median"],
                "val": row["val_accuracy_mean"],
                "test": row["accuracy_mean"],
            }
        )
    return points


def ladder_points(ladder: dict[str, Any]) -> list[dict[str, Any]]:
    """One point per ladder step: its family, name, training GFLOP, median seconds and validation mean."""
    return [
        {"family": r["family"], "name": r["step"], "gflop": r["train_gflop"], "seconds": r["train_seconds_median"], "val": r["val_mean"]}
        for r in ladder["summary"]
    ]


def design_points(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One point per layout of ``design_space.py``: its name, training GFLOP, median seconds and validation mean."""
    return [
        {"name": r["name"], "gflop": r["train_gflop"], "seconds": r["train_seconds_median"], "val": r["val_mean"]}
        for r in report["summary"]
    ]


def draw(presets: list[dict[str, Any]], steps: list[dict[str, Any]], title: str, layouts: list[dict[str, Any]] | None = None) -> plt.Figure:
    """The two panels: accuracy against training GFLOP and against training seconds (both log scales)."""
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for axis, key, label in (
        (axes[0], "gflop", "training GFLOP (forward + backward, log scale)"),
        (axes[1], "seconds", "training seconds (log scale)"),
    ):
        for family in dict.fromkeys(s["family"] for s in steps):
            ladder = [s for s in steps if s["family"] == family]
            axis.plot(
                [s[key] for s in ladder],
                [s["val"] for s in ladder],
                ":",
                marker=".",
                color=COLOURS.get(family, "k"),
                alpha=0.6,
                label=f"{family} ladder steps (validation)",
            )
        for index, point in enumerate(layouts or []):
            axis.plot(point[key], point["val"], "s", color="tab:olive", ms=5, label="VGG layouts (validation)" if index == 0 else None)
            axis.annotate(
                point["name"], (point[key], point["val"]), textcoords="offset points", xytext=(4, -9), fontsize=6, color="tab:olive"
            )
        for point in presets:
            colour = COLOURS.get(point["name"], "k")
            axis.plot([point[key]] * 2, [point["val"], point["test"]], "-", color=colour, alpha=0.5)
            axis.plot(point[key], point["val"], "o", color=colour, label=point["name"])
            axis.plot(point[key], point["test"], "o", mfc="none", color=colour)
            axis.annotate(point["name"], (point[key], point["val"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
        axis.set_xscale("log")
        axis.set_xlabel(label)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    handles, labels = axes[1].get_legend_handles_labels()
    handles += [Line2D([], [], marker="o", ls="", color="k"), Line2D([], [], marker="o", ls="", mfc="none", color="k")]
    labels += ["validation mean (filled)", "test mean, measured once (open)"]
    axes[1].legend(handles, labels, fontsize=7, loc="lower left")
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--results", type=Path, default=HERE / "results.json", help="benchmark.py's output")
    parser.add_argument("--ladder", type=Path, nargs="*", default=sorted(HERE.glob("ladder_*.json")), help="ladder.py outputs")
    parser.add_argument("--design", type=Path, nargs="*", default=sorted(HERE.glob("design_space_*.json")), help="design_space.py outputs")
    parser.add_argument("--out", type=Path, default=HERE.parent / "docs" / "images" / "frontier.png", help="the figure")
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text())
    steps = [point for path in args.ladder for point in ladder_points(json.loads(path.read_text()))]
    cpu = results["machine"]["gpu"] or f"{results['machine']['cpu']}, {results['machine']['threads']} threads"
    layouts = [point for path in args.design for point in design_points(json.loads(path.read_text()))]
    figure = draw(preset_points(results), steps, f"Accuracy against training cost on {cpu}", layouts)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
