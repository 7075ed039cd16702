"""Multi-process training under ``torchrun``: process-group set-up, metric averaging and agreement on stopping.

Outside ``torchrun`` (no ``WORLD_SIZE`` above 1 in the environment) everything here is a no-op, so
single-process training runs exactly as before.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from mnist_cnn.errors import ConfigError
from mnist_cnn.runs import Processes

if TYPE_CHECKING:
    from mnist_cnn.config import TrainConfig


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands among the training processes.

    Attributes:
        rank: This process's index, 0 to ``world_size - 1``.
        world_size: Number of processes.
        local_rank: Index on this machine (picks the GPU).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when there is more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True for the process that logs and writes files (rank 0)."""
        return self.rank == 0


SINGLE_PROCESS = DistributedContext()


def context_from_env(environ: dict[str, str] | None = None) -> DistributedContext:
    """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` as ``torchrun`` sets them.

    Args:
        environ: The environment (default ``os.environ``).

    Returns:
        The context; :data:`SINGLE_PROCESS` when ``WORLD_SIZE`` is absent or 1.

    Raises:
        ConfigError: The variables are not whole numbers or are inconsistent.
    """
    env = os.environ if environ is None else environ
    try:
        world_size = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError("RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers (as torchrun sets them)") from None
    if world_size <= 1:
        return SINGLE_PROCESS
    if not 0 <= rank < world_size:
        raise ConfigError(f"RANK={rank} is outside WORLD_SIZE={world_size}")
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank)


def device_for(context: DistributedContext, requested: torch.device) -> torch.device:
    """The device this process trains on: its own GPU (``cuda:LOCAL_RANK``) when CUDA was chosen."""
    if context.enabled and requested.type == "cuda":
        if context.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK={context.local_rank} needs a GPU of its own but this machine has {torch.cuda.device_count()}")
        return torch.device("cuda", context.local_rank)
    return requested


def init_process_group(context: DistributedContext, device: torch.device) -> None:
    """Join the process group (NCCL for CUDA, gloo otherwise); nothing when single-process or already joined."""
    if not context.enabled or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    # MASTER_ADDR/MASTER_PORT come from torchrun
    dist.init_process_group(backend=backend, rank=context.rank, world_size=context.world_size, timeout=timedelta(minutes=10))


def destroy_process_group(context: DistributedContext) -> None:
    """Leave the process group, if this process joined one."""
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def _reduction_device() -> torch.device:
    # NCCL reduces only CUDA tensors; gloo only CPU ones
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def weighted_mean(values: Iterable[float], weight: int, context: DistributedContext) -> list[float]:
    """Average per-process means over all processes, each weighted by how many examples it saw.

    Args:
        values: This process's means (e.g. loss and accuracy).
        weight: The number of examples behind them.
        context: The process group's context.

    Returns:
        The means over all processes' examples (``values`` unchanged when single-process).
    """
    values = list(values)
    if not context.enabled:
        return values
    totals = torch.tensor([v * weight for v in values] + [float(weight)], dtype=torch.float64, device=_reduction_device())
    dist.all_reduce(totals, op=dist.ReduceOp.SUM)
    count = totals[-1].item()
    return [(t / count).item() for t in totals[:-1]] if count else values


def any_process(flag: bool, context: DistributedContext) -> bool:
    """True on every process when ``flag`` is true on any (so all stop after the same batch)."""
    if not context.enabled:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0], device=_reduction_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def barrier(context: DistributedContext) -> None:
    """Wait for every process (nothing when single-process)."""
    if context.enabled and dist.is_initialized():
        dist.barrier()


def processes_for(context: DistributedContext, device: torch.device) -> Processes:
    """The study's :class:`~mnist_cnn.runs.Processes` seam filled in for ``context``: metrics averaged with
    :func:`weighted_mean`, the model wrapped in ``DistributedDataParallel`` (nothing when single-process)."""
    if not context.enabled:
        return Processes()

    def reduce(metrics: tuple[float, float], examples: int) -> tuple[float, float]:
        loss, accuracy = weighted_mean(metrics, examples, context)
        return loss, accuracy

    def wrap(model: torch.nn.Module) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    return Processes(rank=context.rank, world_size=context.world_size, reduce=reduce, wrap=wrap)


def check_distributed(config: TrainConfig, context: DistributedContext) -> None:
    """Refuse a multi-process run that cannot work.

    Raises:
        ConfigError: The pipeline is not in-memory, or the batch does not divide among the processes.
    """
    if config.pipeline != "memory":
        raise ConfigError(f"multi-process training needs the in-memory pipeline, not {config.pipeline!r}")
    if config.batch_size % context.world_size:
        raise ConfigError(
            f"batch size {config.batch_size} must divide evenly among {context.world_size} processes (it is the total over all processes)"
        )
