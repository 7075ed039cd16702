"""CPU threads: a fixed count by default (reproducible), bounded by the machine; the opt-in adaptive policy, on fed readings."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from mnist_cnn.engine import Run, TrainParts
from mnist_cnn.presets import get_preset
from mnist_cnn.runs import RunOptions, fit
from mnist_cnn.tooling.cli import train
from mnist_cnn.tooling.cli.args import run_cli
from mnist_cnn.tooling.runctl.controls import Controls, fit_controlled
from mnist_cnn.tooling.runctl.threads import AdaptiveThreads, ThreadGovernor, _busy_ticks, _own_ticks, thread_setting, usable_cores


def test_thread_setting_reads_numbers_adaptive_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert thread_setting("adaptive") == "adaptive" and thread_setting(" Adaptive ") == "adaptive"
    assert thread_setting(1) == 1 and thread_setting("2", cores=4) == 2
    monkeypatch.delenv("MNIST_CNN_THREADS", raising=False)
    assert thread_setting() == torch.get_num_threads(), "unset: torch's own count, left as it is"
    monkeypatch.setenv("MNIST_CNN_THREADS", "adaptive")
    assert thread_setting() == "adaptive"
    monkeypatch.setenv("MNIST_CNN_THREADS", "1")
    assert thread_setting() == 1


@pytest.mark.parametrize("bad", ["0", "-2", "many", "1_000", "+1", "99999", "5", 1.5, True, ""])
def test_thread_counts_beyond_the_machine_or_odd_spellings_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match=r"threads must be 'adaptive' or a whole number from 1 to 4 \(this machine's cores\)"):
        thread_setting(bad, cores=4)  # type: ignore[arg-type]


def test_the_train_command_refuses_too_many_threads_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as usage:
        train.main(["--threads", "99999", "--out", str(tmp_path / "a")])
    assert usage.value.code == 2 and "whole number from 1 to" in capsys.readouterr().err
    monkeypatch.setenv("MNIST_CNN_THREADS", "99999")
    assert run_cli(train.main, ["--smoke", "--out", str(tmp_path / "b"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: threads must be") and "99999" in err[0], err


def test_threads_follow_the_cores_other_programs_leave() -> None:
    governor = ThreadGovernor(cores=2, load=lambda: None)
    assert [governor.threads_for(others) for others in (0.0, 0.3, 0.6, 1.0, 1.4, 1.6, 5.0)] == [2, 2, 1, 1, 1, 1, 1]
    governor = ThreadGovernor(cores=8, load=lambda: None)
    assert [governor.threads_for(others) for others in (0.0, 1.0, 2.6, 7.9)] == [8, 7, 5, 1]


def test_proc_stat_parsing() -> None:
    stat = "cpu  10 0 10 100 0 0 0 0 0 0\ncpu0 1 2 3 100 7 4 5 99 0 0\ncpu1 10 0 10 100 0 0 0 0 0 0\nintr 5\n"
    assert _busy_ticks({0}, stat) == 1 + 2 + 3 + 4 + 5  # idle, iowait and steal are not busy
    assert _busy_ticks({0, 1}, stat) == 15 + 20
    own = "4242 (a (strange) name) R 1 2 3 4 5 6 7 8 9 10 170 30 0 0"
    assert _own_ticks(own) == 200


def test_governor_gives_way_to_a_busy_program_and_takes_the_core_back() -> None:
    """Fed readings, not the machine's: the same answer beside a browser, a build or nothing at all."""
    before = torch.get_num_threads()
    readings = iter([None, 1.0, 0.9, 0.0, 0.1])  # first call only starts the window
    now = itertools.count(0.0, 0.25)  # a clock that moves a quarter second per call
    governor = ThreadGovernor(cores=2, interval=1.0, load=lambda: next(readings), clock=lambda: next(now))
    try:
        governor.start(step=0, sample_seconds=0.0)
        assert governor.changes == [[0, 1]] and torch.get_num_threads() == 1, "a busy program takes a core"
        for step in range(1, 13):
            governor.update(step)
        assert governor.changes == [[0, 1], [8, 2]], "read every second (4 clock ticks); the core is taken back once free"
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_adaptive_threads_is_a_callback_at_before_fit_and_after_step() -> None:
    before = torch.get_num_threads()
    governor = ThreadGovernor(cores=2, interval=0.0, load=iter([None, 0.0, 1.0]).__next__, clock=itertools.count().__next__)
    model = torch.nn.Linear(1, 1)
    run = Run(model, TrainParts(torch.nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1)), epochs=1)
    try:
        callback = AdaptiveThreads(governor)
        callback.before_fit(run)
        run.state.step = 5
        callback.after_step(run)
        assert governor.changes == [[0, 2], [5, 1]]
    finally:
        torch.set_num_threads(before)


def test_fit_keeps_torchs_threads_by_default_and_records_the_adaptive_opt_in(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MNIST_CNN_THREADS", raising=False)
    before = torch.get_num_threads()
    config = get_preset("fast", train_size=256, val_size=128, test_size=128)
    fixed = fit_controlled(config, RunOptions(data_dir=str(data_dir), device="cpu", quiet=True)).metrics["threads"]
    assert fixed == {"policy": "fixed", "cores": usable_cores(), "changes": [[0, before]]}
    options = RunOptions(data_dir=str(data_dir), device="cpu", quiet=True)
    adaptive = fit_controlled(config, options, Controls(threads="adaptive")).metrics["threads"]
    assert adaptive["policy"] == "adaptive" and adaptive["changes"] and adaptive["changes"][0][0] == 0
    assert all(1 <= threads <= usable_cores() for _, threads in adaptive["changes"])
    assert torch.get_num_threads() == before, "restored afterwards"


def test_fit_puts_denormal_handling_back(data_dir: Path) -> None:
    """The recipes flush denormals to zero while training; a notebook kernel or test session goes on with IEEE's default."""
    config = get_preset("fast", train_size=256, val_size=128, test_size=128)
    assert config.flush_denormal
    denormal = torch.tensor([1e-40])  # below float32's smallest normal number: flushed to 0 while flushing is on
    fit(config, RunOptions(data_dir=str(data_dir), device="cpu", quiet=True))
    assert (denormal * 1.0).item() > 0
