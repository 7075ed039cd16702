"""Numerics chosen for the machine: CPU classes, bf16 where it is native, channels-last."""

from __future__ import annotations

import pytest
import torch

from mnist_cnn.devices import bf16_is_native, cpu_flags
from mnist_cnn.presets import get_preset
from mnist_cnn.recipe import autocast_dtype_for
from mnist_cnn.runs import RunOptions
from mnist_cnn.tooling.runctl.controls import Controls, fit_controlled
from mnist_cnn.tooling.runctl.numerics import CPU_CLASSES, choose_numerics, cpu_class, cpu_model
from mnist_cnn.tooling.runctl.threads import usable_cores

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni
"""

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}, "amx-bf16"),
        ({"avx2", "avx512f", "avx512_bf16"}, "avx512-bf16"),
        ({"avx2", "avx512f"}, "avx512"),
        ({"avx2", "fma"}, "avx2"),
        ({"neon", "asimd"}, "other"),
        (set(), "other"),
    ],
)
def test_cpu_class_comes_from_the_flags(flags: set[str], expected: str) -> None:
    assert cpu_class(flags) == expected


def test_cpuinfo_is_parsed() -> None:
    assert cpu_model(CPUINFO) == "AMD EPYC 9R14"
    assert {"avx512_bf16", "avx2"} <= cpu_flags(CPUINFO)
    assert cpu_model("") == "unknown CPU"
    assert cpu_flags("") == set()


@pytest.mark.parametrize("flags", [{"avx2", "fma"}, {"avx2", "avx512f"}, set()])
def test_cpus_without_native_bf16_train_in_fp32(flags: set[str]) -> None:
    # emulated bf16 measured 4-12x slower than fp32 on an AVX2-only path: never choose it there
    numerics = choose_numerics(True, True, CPU, flags=flags)
    assert numerics.autocast == "fp32"
    assert numerics.autocast_dtype is None
    assert numerics.channels_last is True
    assert "without native bf16" in numerics.reason


def test_native_bf16_cpus_use_bf16_when_onednn_has_it() -> None:
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("oneDNN here has no bf16 kernels")
    for flags in ({"avx512f", "avx512_bf16"}, {"avx512f", "avx512_bf16", "amx_bf16"}):
        numerics = choose_numerics(True, False, CPU, flags=flags)
        assert (numerics.autocast, numerics.autocast_dtype, numerics.channels_last) == ("bf16", torch.bfloat16, False)
    assert choose_numerics(False, True, CPU, flags={"amx_bf16"}).autocast == "fp32"


def test_numerics_describe_this_machine() -> None:
    numerics = choose_numerics(True, True, CPU).to_dict()
    assert numerics["cpu_class"] in CPU_CLASSES
    assert numerics["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert numerics["device"] == "cpu"


def test_fit_records_numerics_and_threads_and_restores_torch_threads(data_dir) -> None:
    before = torch.get_num_threads()
    config = get_preset("fast", train_size=512, val_size=256, test_size=256)
    result = fit_controlled(config, RunOptions(data_dir=str(data_dir), device="cpu", quiet=True), Controls(threads=1))
    assert torch.get_num_threads() == before
    metrics = result.metrics
    assert metrics["threads"] == {"policy": "fixed", "cores": usable_cores(), "changes": [[0, 1]]}
    assert metrics["numerics"]["cpu_class"] in CPU_CLASSES
    assert metrics["numerics"]["autocast"] == ("bf16" if metrics["precision"] == "bf16-autocast" else "fp32")


@pytest.mark.parametrize("flags", [{"avx2", "fma"}, {"avx2", "avx512f"}, set()])
def test_the_study_trains_in_fp32_where_bf16_is_emulated(flags: set[str]) -> None:
    assert bf16_is_native(CPU, flags) is False
    assert bf16_is_native(CPU, flags) == (choose_numerics(True, False, CPU, flags=flags).autocast == "bf16")


def test_the_recipe_asks_before_the_machine_decides() -> None:
    plain = get_preset("default", bf16=False)
    assert autocast_dtype_for(plain, CPU) is None
    assert autocast_dtype_for(get_preset("default"), CPU) == (torch.bfloat16 if bf16_is_native(CPU) else None)
