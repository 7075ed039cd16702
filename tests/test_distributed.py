"""Multi-process training: the environment torchrun sets, sharded batches, and a real two-process run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mnist_cnn import data
from mnist_cnn.checkpoint import load_checkpoint
from mnist_cnn.engine import Run, TrainParts
from mnist_cnn.errors import ConfigError, TrainingInterrupted
from mnist_cnn.presets import get_preset
from mnist_cnn.tooling.runctl import distributed
from mnist_cnn.tooling.runctl.distributed import check_distributed
from mnist_cnn.tooling.runctl.signals import StopOnRequest


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def test_sharded_batches_are_disjoint_and_even() -> None:
    images, labels = torch.zeros(103, 1, 1, 1), torch.arange(103)

    def shard(rank: int, shuffle: bool) -> list[int]:
        batches = data.InMemoryBatches(
            images, labels, 8, shuffle=shuffle, generator=torch.Generator().manual_seed(5), rank=rank, world_size=2
        )
        assert len(batches) == -(-batches.num_examples // 8)
        return torch.cat([b for _, b in batches]).tolist()

    first, second = shard(0, True), shard(1, True)
    assert len(first) == len(second) == 51 and not set(first) & set(second)
    whole = data.InMemoryBatches(images, labels, 8, shuffle=True, generator=torch.Generator().manual_seed(5))
    order = torch.cat([b for _, b in whole]).tolist()
    assert first == order[0:102:2] and second == order[1:102:2], "every rank shards the same permutation"
    assert sorted(shard(0, False) + shard(1, False)) == list(range(103)), "evaluation keeps every example"


def test_distributed_context_from_env() -> None:
    assert distributed.context_from_env({}) == distributed.SINGLE_PROCESS
    context = distributed.context_from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert context.enabled and not context.is_main and context.local_rank == 1
    with pytest.raises(ConfigError, match="RANK=3 is outside WORLD_SIZE=2"):
        distributed.context_from_env({"RANK": "3", "WORLD_SIZE": "2"})
    assert distributed.weighted_mean([0.5, 0.25], 10, distributed.SINGLE_PROCESS) == [0.5, 0.25]


def test_single_process_run_neither_averages_nor_waits() -> None:
    model = torch.nn.Linear(1, 1)
    run = Run(model, TrainParts(torch.nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1)), epochs=1)
    assert run.average((0.5, 0.25), None) == (0.5, 0.25)
    with pytest.raises(TrainingInterrupted):
        StopOnRequest(lambda: True).after_step(run)
    StopOnRequest(lambda: False).after_step(run)


def test_multi_process_runs_refuse_what_cannot_work() -> None:
    two = distributed.DistributedContext(rank=0, world_size=2)
    with pytest.raises(ConfigError, match="must divide evenly among 2 processes"):
        check_distributed(get_preset("default", batch_size=127), two)
    with pytest.raises(ConfigError, match="needs the in-memory pipeline"):
        check_distributed(get_preset("seed"), two)
    check_distributed(get_preset("default"), two)


@pytest.mark.slow  # end-to-end: make unit leaves it out
def test_torchrun_two_processes_train_and_save_once(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "ddp"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "mnist_cnn.train",
            "--preset",
            "fast",
            "--smoke",
            "--epochs",
            "2",
            "--quiet",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=environment(),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("saved ") == 1 and "Traceback" not in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "model.pt"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["history"]["epoch"] == [0, 1, 2]
    assert metrics["test_accuracy"] > 0.75, "two processes learn as well as one (about 0.86 on this slice)"
    assert load_checkpoint(out / "model.pt").payload["training_state"]["world_size"] == 2
