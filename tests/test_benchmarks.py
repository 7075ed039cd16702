"""The benchmark scripts' own arithmetic and settings (their measurements are run by hand, never in tests)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

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
