"""Building what a recipe (a :class:`~mnist_cnn.config.TrainConfig`) trains with: model, optimizer, schedule, loss, precision."""

from __future__ import annotations

import torch
from torch import nn

from mnist_cnn.augment import RandomAffine
from mnist_cnn.config import TrainConfig
from mnist_cnn.devices import bf16_is_native
from mnist_cnn.engine import TrainParts
from mnist_cnn.initialise import identity_init, whiten_first_conv
from mnist_cnn.model import build_model


def parameter_groups(config: TrainConfig, model: nn.Module) -> list[dict]:
    """The model's parameters in the optimizer's groups: batch-norm scales and shifts apart when ``norm_lr_scale`` is set.

    Why: a batch norm's scale and shift (a few numbers per channel setting each layer's output size and offset) move slowly at the
    network's rate under weight decay's pull; a larger rate, with the decay divided by it so the pull per step stays the same, lets them
    settle in the first epoch. Each group carries its own peak ``lr`` for the one-cycle schedule.
    """
    norms = (nn.BatchNorm1d, nn.BatchNorm2d)
    norm_ids = {id(p) for m in model.modules() if isinstance(m, norms) for p in m.parameters(recurse=False)}
    scale = config.norm_lr_scale
    if scale == 1.0 or not norm_ids:
        return [{"params": list(model.parameters()), "lr": config.lr, "weight_decay": config.weight_decay}]
    return [
        {"params": [p for p in model.parameters() if id(p) not in norm_ids], "lr": config.lr, "weight_decay": config.weight_decay},
        {
            "params": [p for p in model.parameters() if id(p) in norm_ids],
            "lr": config.lr * scale,
            "weight_decay": config.weight_decay / scale,
        },
    ]


def build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer the config names, over :func:`parameter_groups`."""
    groups = parameter_groups(config, model)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, betas=config.betas)
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)


def build_scheduler(
    config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """A per-batch learning-rate schedule, or ``None`` for a constant rate."""
    total_steps = config.epochs * steps_per_epoch
    # OneCycle needs at least two steps in each phase; tiny smoke runs keep a constant rate instead.
    if config.schedule == "constant" or total_steps < 4:
        return None
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[group["lr"] for group in optimizer.param_groups],
        total_steps=total_steps,
        pct_start=min(max(config.onecycle_pct_start, 2 / total_steps), 0.5),
        cycle_momentum=config.cycle_momentum and config.optimizer == "sgd" and config.momentum > 0,
    )


def autocast_dtype_for(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """``torch.bfloat16`` when the recipe asks for bf16 autocast and ``device`` runs it natively, else ``None`` (fp32)."""
    return torch.bfloat16 if config.bf16 and bf16_is_native(device) else None


def model_for(config: TrainConfig, device: torch.device, train_images: torch.Tensor | None = None) -> nn.Module:
    """The network ``config`` names, freshly initialised on ``device``, in channels-last memory when it asks for that.

    Args:
        train_images: Training images as the model sees them, for ``config.whiten`` (without them the first convolution
            keeps its random start).
    """
    model = build_model(config.arch, **config.model_options)
    # neither step draws random numbers, so a run's random stream is the same with or without them
    if config.identity_init:
        identity_init(model)
    if config.whiten and train_images is not None:
        whiten_first_conv(model, train_images)
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if config.channels_last else model


def build_parts(
    config: TrainConfig, model: nn.Module, steps_per_epoch: int, device: torch.device, generator: torch.Generator
) -> TrainParts:
    """The loss, optimizer, schedule (over all epochs), augmentation (from the data ``generator``) and precision ``config`` names."""
    optimizer = build_optimizer(config, model)
    return TrainParts(
        loss_fn=nn.CrossEntropyLoss(label_smoothing=config.label_smoothing),
        optimizer=optimizer,
        scheduler=build_scheduler(config, optimizer, steps_per_epoch),
        augment=RandomAffine(**config.augment, generator=generator) if config.augment else None,
        device=device,
        autocast_dtype=autocast_dtype_for(config, device),
        channels_last=config.channels_last,
    )
