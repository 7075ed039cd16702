"""The end of a run: a signal while the result is written waits for it, and a run left with every epoch in last.pt
but no model.pt (killed while saving) is finished by resuming it, without training again."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from mnist_cnn import results
from mnist_cnn.checkpoint import load_checkpoint
from mnist_cnn.tooling.cli import train
from mnist_cnn.tooling.cli.args import run_cli

SMOKE = ["--preset", "fast", "--smoke", "--quiet"]


def test_sigterm_while_model_pt_is_written_waits_for_the_save(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    real_save_run = results.save_run

    def save_with_a_signal(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the final files are being written
        return real_save_run(*args, **kwargs)

    monkeypatch.setattr(results, "save_run", save_with_a_signal)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        status = run_cli(train.main, [*SMOKE, "--out", str(out)])
    finally:
        signal.signal(signal.SIGTERM, previous)  # the command ignores late signals after a stop, as it exits
    err = capsys.readouterr().err
    assert status == 0, err
    assert "SIGTERM arrived while the result was being saved" in err and len(err.strip().splitlines()) == 1
    names = sorted(p.name for p in out.iterdir())
    assert "model.pt" in names and "metrics.json" in names and "last.pt" not in names
    assert not [n for n in names if n.endswith(".tmp")], names
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 1


def test_a_run_with_every_epoch_in_last_pt_but_no_model_pt_is_finished_without_training(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"

    def killed_while_saving(*args, **kwargs):
        raise KeyboardInterrupt  # stands for a kill -9 between the last epoch's last.pt and model.pt

    with monkeypatch.context() as patch:
        patch.setattr(results, "save_run", killed_while_saving)
        assert run_cli(train.main, [*SMOKE, "--out", str(out)]) == 130
    last = load_checkpoint(out / "last.pt")
    assert last.payload["training_state"]["epoch"] == 1 and not (out / "model.pt").exists()
    capsys.readouterr()

    assert run_cli(train.main, ["--resume", str(out / "last.pt"), "--quiet"]) == 0, capsys.readouterr().err
    finished = load_checkpoint(out / "model.pt")
    assert finished.history == last.history, "no epoch was trained again"
    assert finished.payload["training_state"]["step"] == last.payload["training_state"]["step"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["test_accuracy"] <= 1 and not (out / "last.pt").exists()
    # a finished model.pt still asks for --epochs to train further
    assert run_cli(train.main, ["--resume", str(out / "model.pt"), "--quiet"]) == 1
    assert "has already trained all its 1 epoch(s)" in capsys.readouterr().err


def test_usage_errors_and_messages_never_print_escape_sequences_raw(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as usage:
        train.main(["--bogus\x1b]0;title\x07", "--quiet"])
    err = capsys.readouterr().err
    assert usage.value.code == 2 and "\x1b" not in err and "\\x1b]0;title\\x07" in err and len(err.strip().splitlines()) == 1
    missing = tmp_path / "no\nsuch\x1b[31m.pt"
    assert run_cli(train.main, ["--resume", str(missing), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and len(err.strip().splitlines()) == 1, err
