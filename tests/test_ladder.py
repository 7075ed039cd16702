"""The fast-training ladder's techniques: whitened and identity starts, the batch-norm rate, test-time augmentation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_resume import assert_same_weights, comparable, quiet_fit, small_config
from torch import nn

from mnist_cnn.checkpoint import load_checkpoint
from mnist_cnn.config import TrainConfig
from mnist_cnn.errors import ConfigError, TrainingInterrupted
from mnist_cnn.initialise import convolutions, identity_init, whiten_first_conv
from mnist_cnn.model import VGG, SmallCNN
from mnist_cnn.recipe import build_optimizer, build_scheduler, model_for, parameter_groups
from mnist_cnn.tooling.runctl.resume import resume_config
from mnist_cnn.tta import SHIFTS, tta_accuracy, tta_logits

LADDER = {"whiten": True, "identity_init": True, "norm_lr_scale": 4.0}


def smooth_images(n: int = 300, seed: int = 0) -> torch.Tensor:
    """Images with correlated neighbouring pixels (blurred noise), as strokes are: a covariance worth whitening."""
    noise = torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    return nn.functional.avg_pool2d(noise, 3, stride=1, padding=1) * 3 + 0.5


@pytest.mark.parametrize("model", [VGG(hidden_units=16), SmallCNN(channels1=16)], ids=["vgg 3x3", "small_cnn 5x5"])
def test_whitened_filters_decorrelate_the_patches_to_unit_variance(model: nn.Module) -> None:
    images = smooth_images()
    set_count = whiten_first_conv(model, images)
    conv = convolutions(model)[0]
    assert set_count == 16
    pairs = set_count // 2
    assert torch.allclose(conv.weight[:pairs], -conv.weight[pairs:set_count])
    # the first filters' outputs over the images: uncorrelated, variance 1 (up to eps), mean 0 (the bias centres them)
    with torch.no_grad():
        out = conv(images)[:, :pairs]
    if conv.padding == (1, 1):  # the padded border's patches are not the image's; compare on the interior
        out = out[:, :, 1:-1, 1:-1]
    out = out.transpose(0, 1).reshape(pairs, -1).double()
    covariance = torch.cov(out)
    assert torch.allclose(torch.diag(covariance), torch.ones(pairs, dtype=torch.double), atol=0.02)
    off_diagonal = covariance - torch.diag(torch.diag(covariance))
    assert off_diagonal.abs().max() < 0.02
    assert out.mean(1).abs().max() < 0.02


def test_whitening_leaves_filters_beyond_twice_the_patch_random() -> None:
    model = VGG(hidden_units=32)
    before = convolutions(model)[0].weight.detach().clone()
    assert whiten_first_conv(model, smooth_images()) == 18  # 9 directions of a 3x3 patch, each +/-
    assert torch.equal(convolutions(model)[0].weight[18:], before[18:])


def test_identity_start_passes_a_block_input_through() -> None:
    model = VGG(hidden_units=8)
    assert identity_init(model) == 5  # every convolution but the first
    second = convolutions(model)[1]
    x = torch.rand(2, 8, 14, 14)
    with torch.no_grad():
        assert torch.allclose(second(x) - second.bias[:, None, None], x, atol=1e-6)
    wider = nn.Conv2d(4, 6, 3, padding=1)
    nn.init.dirac_(wider.weight[:4])
    assert torch.count_nonzero(wider.weight[:4]) == 4 and torch.count_nonzero(wider.weight[4:]) > 0


def test_ladder_starts_draw_no_random_numbers() -> None:
    """A recipe with the ladder's starts keeps the same random stream as one without (seeded runs stay comparable)."""
    torch.manual_seed(3)
    model_for(TrainConfig(), torch.device("cpu"))
    plain = torch.rand(3)
    torch.manual_seed(3)
    model_for(TrainConfig(whiten=True, identity_init=True), torch.device("cpu"), smooth_images(50))
    assert torch.equal(torch.rand(3), plain)


def test_batch_norm_parameters_get_their_own_rate_and_the_schedule_follows() -> None:
    config = TrainConfig(
        model_options={"hidden_units": 4, "batch_norm": True}, lr=0.1, weight_decay=4e-4, norm_lr_scale=4.0, schedule="onecycle", epochs=1
    )
    model = model_for(config, torch.device("cpu"))
    groups = parameter_groups(config, model)
    norms = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    assert [g["lr"] for g in groups] == [0.1, 0.4]
    assert groups[1]["weight_decay"] == pytest.approx(1e-4)
    assert sum(p.numel() for p in groups[1]["params"]) == norms
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in model.parameters())
    optimizer = build_optimizer(config, model)
    scheduler = build_scheduler(config, optimizer, steps_per_epoch=100)
    assert [g["max_lr"] for g in optimizer.param_groups] == [0.1, 0.4]
    for _ in range(24):  # one-cycle reaches its peak after a quarter of the 100 steps
        optimizer.step()
        scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.1, 0.4])


def test_without_a_scale_there_is_one_group() -> None:
    config = TrainConfig(model_options={"hidden_units": 4, "batch_norm": True})
    assert len(parameter_groups(config, model_for(config, torch.device("cpu")))) == 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"whiten": "yes"}, "whiten must be true or false"),
        ({"identity_init": 1}, "identity_init must be true or false"),
        ({"norm_lr_scale": 0}, "norm_lr_scale must be"),
        ({"norm_lr_scale": float("nan")}, "norm_lr_scale must be"),
        ({"whiten": True, "pipeline": "torchvision"}, "whiten needs the in-memory pipeline"),
    ],
)
def test_bad_ladder_settings_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**changes).validate()


def test_a_ladder_run_resumed_equals_it_uninterrupted(tmp_path: Path, data_dir: Path) -> None:
    config = small_config(**LADDER)
    uninterrupted = quiet_fit(config)
    last, seen = tmp_path / "last.pt", {"batches": 0}

    def stop_in_epoch_two() -> bool:
        seen["batches"] += 1
        return seen["batches"] > 8 + 3

    with pytest.raises(TrainingInterrupted):
        quiet_fit(small_config(**LADDER), checkpoint_path=last, should_stop=stop_in_epoch_two)
    checkpoint = load_checkpoint(last)
    resumed = quiet_fit(resume_config(checkpoint), resume=checkpoint, checkpoint_path=last)
    assert resume_config(checkpoint).whiten is True
    assert comparable(resumed) == comparable(uninterrupted)
    assert_same_weights(resumed.model, uninterrupted.model)


class _CountingModel(nn.Module):
    """Logits that say 'the digit is 1' only when the image's top-left pixel is lit, to see which views were used."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(x), 10)
        logits[:, 1] = x[:, 0, 0, 0]
        return logits


def test_tta_averages_the_shifted_views() -> None:
    images = torch.zeros(1, 1, 28, 28)
    images[0, 0, 1, 0] = 5.0  # one pixel below the corner: only the view shifted up by a row puts it there
    assert tta_logits(_CountingModel(), images)[0, 1] == pytest.approx(5.0 / len(SHIFTS))
    assert tta_logits(_CountingModel(), images, shifts=((0, 0),))[0, 1] == 0.0
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    x = torch.rand(4, 1, 28, 28)
    assert torch.allclose(tta_logits(model, x, shifts=((0, 0),)), model(x))


def test_tta_accuracy_counts_right_answers() -> None:
    lit = torch.zeros(4, 1, 28, 28)
    lit[:2, 0, 0, 0] = 10.0  # lit in every view's average: predicted 1
    labels = torch.tensor([1, 0, 1, 0])  # right, wrong, wrong, right (unlit: all-zero logits pick 0)
    assert tta_accuracy(_CountingModel(), [(lit, labels)], torch.device("cpu"), shifts=((0, 0),)) == 0.5
