"""The command line's controls plugged into the study's :func:`~mnist_cnn.runs.fit`: threads, a checkpoint every epoch,
resuming, several processes."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mnist_cnn.checkpoint import LoadedCheckpoint
from mnist_cnn.config import TrainConfig
from mnist_cnn.devices import select_device
from mnist_cnn.engine import Callback, Run
from mnist_cnn.results import TrainResult, checkpoint_payload, result_from, save_checkpoint
from mnist_cnn.runs import RunOptions, fit
from mnist_cnn.tooling.runctl.distributed import (
    SINGLE_PROCESS,
    DistributedContext,
    check_distributed,
    device_for,
    init_process_group,
    processes_for,
)
from mnist_cnn.tooling.runctl.numerics import record_numerics
from mnist_cnn.tooling.runctl.resume import resume_step
from mnist_cnn.tooling.runctl.threads import thread_policy


class SaveCheckpoint(Callback):
    """Writes a resumable checkpoint (the run as :func:`~mnist_cnn.results.result_from` sees it) after every epoch, and
    names it as ``run.checkpoint``, the state to resume from if training stops.

    It runs after the callbacks that change the run (``order`` 50), so what they recorded in ``run.facts`` is saved.

    Args:
        path: Where to write; replaced atomically each time.
    """

    order = 50

    def __init__(self, path: Path) -> None:
        self.path = path

    def after_epoch(self, run: Run) -> None:
        save_checkpoint(self.path, checkpoint_payload(result_from(run)))
        run.checkpoint = (self.path, run.state.epoch)


@dataclass
class Controls:
    """What the command line controls around a run, beyond what the study's :class:`~mnist_cnn.runs.RunOptions` say.

    Attributes:
        threads: CPU threads: a whole number, ``"adaptive"`` (gives cores to other busy programs), or ``None`` for
            ``$MNIST_CNN_THREADS``, else torch's own count.
        checkpoint: Where the main process writes a resumable checkpoint after every epoch (``None``: nowhere).
        resume: Continue this checkpoint's run (its config should come from
            :func:`~mnist_cnn.tooling.runctl.resume.resume_config`).
        context: This process's place among several under ``torchrun`` (default: the only one).
    """

    threads: int | str | None = None
    checkpoint: Path | None = None
    resume: LoadedCheckpoint | None = None
    context: DistributedContext = field(default_factory=lambda: SINGLE_PROCESS)


def fit_controlled(
    config: TrainConfig, options: RunOptions, controls: Controls | None = None, callbacks: Sequence[Callback] = ()
) -> TrainResult:
    """:func:`~mnist_cnn.runs.fit`, with the controls plugged into the seams it offers.

    Several processes join their group first and fill in ``options.processes``; recording the numerics and
    resuming are steps between preparing and training; the thread policy is a callback that runs before the others,
    the per-epoch checkpoint one that runs after them.

    Args:
        config: The recipe.
        options: Where and how to run.
        controls: Threads, checkpoints, resuming and processes (default: none of them).
        callbacks: More callbacks, e.g. :class:`~mnist_cnn.tooling.runctl.signals.StopOnRequest`.

    Returns:
        What :func:`~mnist_cnn.runs.fit` returns.

    Raises:
        ConfigError: The thread setting, or a multi-process run, cannot work.
        TrainingStopped: As :func:`~mnist_cnn.runs.fit`.
    """
    controls = controls or Controls()
    context = controls.context
    requested = options.device if isinstance(options.device, torch.device) else select_device(options.device)
    device = device_for(context, requested)
    policy = thread_policy(controls.threads, device)
    if context.enabled:
        check_distributed(config, context)
        init_process_group(context, device)
    steps = [*options.steps, record_numerics]
    if controls.resume is not None:
        steps.append(resume_step(controls.resume, announce=context.is_main and not options.quiet))
    options = dataclasses.replace(options, device=device, steps=steps, processes=processes_for(context, device))
    saving = [SaveCheckpoint(Path(controls.checkpoint))] if controls.checkpoint is not None and context.is_main else []
    return fit(config, options, [*([policy] if policy is not None else []), *saving, *callbacks])
