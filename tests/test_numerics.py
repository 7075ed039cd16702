"""Numerics chosen for the machine (CPU classes, bf16, channels-last) and the adaptive CPU thread policy."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from mnist_cnn.errors import ConfigError
from mnist_cnn.numerics import CPU_CLASSES, choose_numerics, cpu_class, cpu_flags, cpu_model
from mnist_cnn.presets import get_preset
from mnist_cnn.runs import fit, thread_governor_for
from mnist_cnn.threads import ThreadGovernor, _busy_ticks, _own_ticks, fixed_threads, thread_setting, usable_cores

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


def test_thread_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert thread_setting("adaptive") is None
    assert thread_setting(3) == 3
    assert thread_setting("2") == 2
    monkeypatch.setenv("MNIST_CNN_THREADS", "adaptive")
    assert thread_setting() is None
    monkeypatch.setenv("MNIST_CNN_THREADS", "1")
    assert thread_setting() == 1
    for bad in ("0", "-2", "many", 1.5e9j):
        with pytest.raises(ValueError, match="threads must be 'adaptive' or a whole number from 1"):
            thread_setting(bad)  # type: ignore[arg-type]
    monkeypatch.setenv("MNIST_CNN_THREADS", "lots")
    with pytest.raises(ConfigError, match="threads must be"):
        thread_governor_for(CPU, None)


def test_threads_follow_the_cores_other_programs_leave() -> None:
    governor = ThreadGovernor(cores=2, enabled=False)
    assert [governor.threads_for(others) for others in (0.0, 0.3, 0.6, 1.0, 1.4, 1.6, 5.0)] == [2, 2, 1, 1, 1, 1, 1]
    governor = ThreadGovernor(cores=8, enabled=False)
    assert [governor.threads_for(others) for others in (0.0, 1.0, 2.6, 7.9)] == [8, 7, 5, 1]


def test_proc_stat_parsing() -> None:
    stat = "cpu  10 0 10 100 0 0 0 0 0 0\ncpu0 1 2 3 100 7 4 5 99 0 0\ncpu1 10 0 10 100 0 0 0 0 0 0\nintr 5\n"
    assert _busy_ticks({0}, stat) == 1 + 2 + 3 + 4 + 5  # idle, iowait and steal are not busy
    assert _busy_ticks({0, 1}, stat) == 15 + 20
    own = "4242 (a (strange) name) R 1 2 3 4 5 6 7 8 9 10 170 30 0 0"
    assert _own_ticks(own) == 200


@pytest.mark.skipif(usable_cores() < 2, reason="needs two cores to leave one to a busy neighbour")
def test_governor_gives_way_to_a_busy_program_and_takes_the_core_back() -> None:
    before = torch.get_num_threads()
    governor = ThreadGovernor(interval=0.0)
    if not governor.enabled:
        pytest.skip("no /proc/stat here")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        governor.start(step=0)
        assert governor.changes[-1] == [0, governor.cores - 1]
        assert torch.get_num_threads() == governor.cores - 1
    finally:
        busy.kill()
        busy.wait()
    try:
        governor.other_programs_cores()  # a fresh window without the busy program
        time.sleep(0.5)
        governor.update(step=7)
        assert governor.changes[-1] == [7, governor.cores]
        assert torch.get_num_threads() == governor.cores
    finally:
        torch.set_num_threads(before)


def test_fit_records_numerics_and_threads_and_restores_torch_threads(data_dir) -> None:
    before = torch.get_num_threads()
    config = get_preset("fast", train_size=512, val_size=256, test_size=256)
    result = fit(config, data_dir=str(data_dir), device="cpu", progress=False, log=None, threads=1)
    assert torch.get_num_threads() == before
    metrics = result.metrics
    assert metrics["threads"] == {"policy": "fixed", "cores": usable_cores(), "changes": [[0, 1]]}
    assert metrics["numerics"]["cpu_class"] in CPU_CLASSES
    assert metrics["numerics"]["autocast"] == ("bf16" if metrics["precision"] == "bf16-autocast" else "fp32")
    assert fixed_threads(before).changes == [[0, before]]
