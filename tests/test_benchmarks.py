"""The benchmark scripts' own arithmetic and settings (their measurements are run by hand, never in tests)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from mnist_cnn.model import build_model
from mnist_cnn.presets import get_preset

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.fixture(scope="module")
def bench_script() -> ModuleType:
    return _load("benchmark")


def test_every_sweep_candidate_is_a_valid_recipe() -> None:
    sweep = _load("recipe_sweep")
    for family, candidates in sweep.CANDIDATES.items():
        for name, (preset, changes) in candidates.items():
            config = get_preset(preset)
            for field_name, value in changes.items():
                assert hasattr(config, field_name), f"{family}/{name}: no field {field_name}"
                setattr(config, field_name, value)
            config.validate()
            build_model(config.arch, **config.model_options)


def test_sweep_summary_ranks_validation_only() -> None:
    sweep = _load("recipe_sweep")
    name = next(iter(sweep.CANDIDATES["fast"]))
    rows = [
        {"family": "fast", "candidate": name, "seed": 0, "val_accuracy": 0.99, "train_seconds": 3.0},
        {"family": "fast", "candidate": name, "seed": 1, "val_accuracy": 0.98, "train_seconds": 5.0},
        {"family": "fast", "candidate": name, "seed": 2, "error": ["boom"]},
    ]
    lines = sweep.summary(rows)
    assert f"| {name} | 2 | 0.9850 | 0.9800 | 4.0 |" in lines
    assert any("seed 2 failed" in line for line in lines)
    assert not any("test" in line for line in lines)


def test_throughput_and_share_of_peak(bench_script: ModuleType) -> None:
    runs = [{"images_trained": 55_000, "train_mflop_per_image": 30.0, "device": "cpu", "precision": "fp32"}]
    row = bench_script.throughput(runs, seconds=11.0)
    assert row["images_per_second"] == pytest.approx(5_000)
    assert row["gflops"] == pytest.approx(150.0)
    if row.get("peak_gflops"):
        assert row["peak_share"] == pytest.approx(150.0 / row["peak_gflops"])
    assert bench_script.throughput([{"device": "cpu"}], 1.0) == {}


def test_peak_counts_bf16_dot_products_twice(bench_script: ModuleType) -> None:
    fp32, how = bench_script.peak_gflops("fp32")
    bf16, _ = bench_script.peak_gflops("bf16-autocast")
    assert "FLOP/cycle" in how
    assert bf16 >= fp32 >= 0


def test_training_flops_count_forward_and_backward(bench_script: ModuleType) -> None:
    seed = bench_script.training_flops_per_image(get_preset("seed"))
    # the seed VGG's convolutions and linear layer: about 5.1 million multiply-adds forward, 2 FLOPs each,
    # and the backward pass about twice the forward (the first layer needs no input gradient)
    assert 2.9 * 10.1e6 < seed < 3.0 * 10.2e6


def test_contention_table(bench_script: ModuleType) -> None:
    table = [
        {"threads": "2 (torch's default)", "alone_s": 10.0, "busy_s": 35.0, "busy_over_alone": 3.5, "alone_over_torch_default": 1.0},
        {"threads": "adaptive", "alone_s": 10.2, "busy_s": 15.0, "busy_over_alone": 1.47, "alone_over_torch_default": 1.02},
    ]
    text = bench_script.format_contention(table)
    assert "| adaptive | 10.20 | 15.00 | 1.47 | 1.02 |" in text


def test_every_ladder_step_is_a_valid_recipe() -> None:
    ladder = _load("ladder")
    for family, steps in ladder.STEPS.items():
        assert steps[0][0] == "baseline" and steps[0][2] == ladder.OFF, f"{family}: the ladder starts from the preset without it"
        for name, preset, changes, ema in steps:
            config = get_preset(preset, **changes)
            build_model(config.arch, **config.model_options)
            assert ema is None or 0 < ema < 1, f"{family}/{name}"


def _ladder_row(step: str, seed: int, val_by_epoch: list[float], seconds: list[float], **extra) -> dict:
    return {
        "family": "default",
        "step": step,
        "seed": seed,
        "epochs": len(val_by_epoch),
        "val_accuracy": val_by_epoch[-1],
        "val_by_epoch": val_by_epoch,
        "seconds_by_epoch": seconds,
        "train_seconds": sum(seconds),
        "tta_val_accuracy": val_by_epoch[-1] + 0.001,
        "train_gflop": 100.0,
        **extra,
    }


def test_ladder_time_to_target_reads_the_epoch_curve() -> None:
    ladder = _load("ladder")
    row = _ladder_row("baseline", 0, [0.990, 0.9941, 0.9950], [10.0, 11.0, 12.0])
    assert ladder.time_to(row, 0.994) == pytest.approx(21.0)
    assert ladder.time_to(row, 0.990) == pytest.approx(10.0)
    assert ladder.time_to(row, 0.999) is None


def test_ladder_summary_reports_spread_and_reach_on_validation_only() -> None:
    ladder = _load("ladder")
    rows = [
        _ladder_row("baseline", 0, [0.990, 0.993, 0.9940], [10.0, 10.0, 10.0]),
        _ladder_row("baseline", 1, [0.991, 0.992, 0.9930], [12.0, 12.0, 12.0]),
        _ladder_row("+ EMA of weights", 0, [0.990, 0.994, 0.9950], [10.0, 10.0, 10.0], ema_val_accuracy=0.996, ema_tta_val_accuracy=0.997),
    ]
    table = {r["step"]: r for r in ladder.summarise(rows, "default")}
    base = table["baseline"]
    assert base["seeds"] == 2 and base["val_mean"] == pytest.approx(0.9935) and base["val_min"] == pytest.approx(0.993)
    assert base["val_sd"] == pytest.approx(0.000707, abs=1e-5)
    assert base["reached_target"] == 1 and base["time_to_target_median"] == pytest.approx(30.0)
    assert base["train_seconds_median"] == pytest.approx(33.0)
    assert table["+ EMA of weights"]["ema_val_mean"] == pytest.approx(0.996) and table["+ EMA of weights"]["val_sd"] == 0.0
    assert "ema_val_mean" not in base
    text = ladder.format_table(list(table.values()))
    assert "| default | baseline | 3 | 2 | 33.00 | 0.9935 |" in text and "1/2 ≥ 0.994" in text
    assert "test" not in text


def test_frontier_points_and_figure(tmp_path: Path) -> None:
    frontier = _load("frontier")
    results = {
        "machine": {"cpu": "Test CPU", "threads": 2, "gpu": None},
        "summary": [{"recipe": "fast", "train_seconds_median": 4.0, "val_accuracy_mean": 0.992, "accuracy_mean": 0.993}],
        "runs": [{"recipe": "fast", "images_trained": 55_000, "train_mflop_per_image": 4.0}],
    }
    ladder = {"summary": [{"family": "fast", "step": "baseline", "train_gflop": 220.0, "train_seconds_median": 5.0, "val_mean": 0.99}]}
    (tmp_path / "results.json").write_text(json.dumps(results))
    (tmp_path / "ladder_fast.json").write_text(json.dumps(ladder))
    assert frontier.preset_points(results) == [{"name": "fast", "gflop": 220.0, "seconds": 4.0, "val": 0.992, "test": 0.993}]
    design = {
        "summary": [
            {"name": "16x3|16x3 e3", "train_gflop": 5000.0, "train_seconds_median": 75.0, "val_mean": 0.9933},
            {"name": "stem16|16x2|32x2 e4", "train_gflop": 2000.0, "train_seconds_median": 50.0, "val_mean": 0.9945},
        ]
    }
    (tmp_path / "design_space_test.json").write_text(json.dumps(design))
    assert frontier.design_points(design) == [
        {"name": "16x3|16x3 e3", "gflop": 5000.0, "seconds": 75.0, "val": 0.9933},
        {"name": "stem16|16x2|32x2 e4", "gflop": 2000.0, "seconds": 50.0, "val": 0.9945},
    ]
    out = tmp_path / "frontier.png"
    frontier.main(
        [
            *("--results", str(tmp_path / "results.json"), "--ladder", str(tmp_path / "ladder_fast.json")),
            *("--design", str(tmp_path / "design_space_test.json"), "--out", str(out)),
        ]
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_design_space_layout_is_a_valid_vgg_recipe() -> None:
    design = _load("design_space")
    assert next(iter(design.CANDIDATES)) == design.REFERENCE
    reference = get_preset("default", **design.CANDIDATES[design.REFERENCE]).model_options
    assert reference == {"hidden_units": 16, "batch_norm": True, "batch_norm_at": "block"}, "the seed's layout, with batch norm"
    for name, changes in design.CANDIDATES.items():
        config = get_preset("default", **changes)
        assert config.arch == "vgg", name
        model = build_model(config.arch, **config.model_options)
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10), name


def test_design_space_summary_pairs_each_time_with_the_reference_of_its_seed() -> None:
    design = _load("design_space")
    runs = [
        {"name": design.REFERENCE, "seed": 42, "changes": {}, "val_accuracy": 0.993, "train_seconds": 80.0, "train_gflop": 5000.0},
        {"name": design.REFERENCE, "seed": 43, "changes": {}, "val_accuracy": 0.994, "train_seconds": 60.0, "train_gflop": 5000.0},
        {"name": "cheap", "seed": 42, "changes": {"epochs": 2}, "val_accuracy": 0.990, "train_seconds": 40.0, "train_gflop": 3000.0},
        {"name": "cheap", "seed": 43, "changes": {"epochs": 2}, "val_accuracy": 0.992, "train_seconds": 45.0, "train_gflop": 3000.0},
    ]
    rows = {row["name"]: row for row in design.summarise(runs)}
    # ratios per seed, 40/80 and 45/60, then their median: not the ratio of the medians (42.5/70)
    assert rows["cheap"]["ratio_to_reference_median"] == pytest.approx((0.5 + 0.75) / 2)
    assert rows["cheap"]["val_mean"] == pytest.approx(0.991) and rows["cheap"]["val_min"] == 0.990
    assert rows[design.REFERENCE]["ratio_to_reference_median"] == 1.0 and rows[design.REFERENCE]["train_seconds_median"] == 70.0
    text = design.format_table(list(rows.values()))
    assert "| cheap | 2 | 0.9910 (0.9900) |" in text and "test" not in text


def test_ladder_smoke_run_records_validation_tta_and_ema(tmp_path: Path, data_dir: Path) -> None:
    """The script's wiring on a sliver of the data: every run records its curve, TTA and (where asked) EMA on validation."""
    ladder = _load("ladder")
    out = tmp_path / "ladder.json"
    ladder.main(["--quick", "--family", "fast", "--seeds", "1", "--steps", "baseline", "+ EMA of weights", "--out", str(out)])
    results = json.loads(out.read_text())
    assert [r["step"] for r in results["runs"]] == ["baseline", "+ EMA of weights"]
    for run in results["runs"]:
        assert len(run["val_by_epoch"]) == run["epochs"] == 1 and 0 <= run["tta_val_accuracy"] <= 1
        assert not any("test" in key for key in run)
    assert "ema_val_accuracy" in results["runs"][1] and "ema_val_accuracy" not in results["runs"][0]
    ladder.main(["--quick", "--family", "fast", "--seeds", "1", "--first-seed", "1", "--steps", "baseline", "--add", "--out", str(out)])
    again = json.loads(out.read_text())
    assert [(r["step"], r["seed"]) for r in again["runs"]][-1] == ("baseline", 1)
    assert next(r for r in again["summary"] if r["step"] == "baseline")["seeds"] == 2


def test_design_space_names_its_file_after_the_cpu_class() -> None:
    design = _load("design_space")
    assert design.cpu_tag({"cpu_family": 25, "cpu_model": 1}) == "zen3"
    assert design.cpu_tag({"cpu_family": 25, "cpu_model": 17}) == "zen4"
    assert design.cpu_tag({"cpu_family": 6, "cpu_model": 143}) == "family6-model143"
    assert design.cpu_tag({"cpu_family": None, "cpu_model": None}) == "cpu"
