"""The training loop on small synthetic tensors (no MNIST): one batch, one epoch, evaluation, the epoch loop, the state."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mnist_cnn import analysis, data, engine
from mnist_cnn.augment import RandomAffine
from mnist_cnn.callbacks import PrintEpochs
from mnist_cnn.errors import TrainingDiverged, TrainingInterrupted, TrainingStopped
from mnist_cnn.model import VGG
from mnist_cnn.tooling.runctl.signals import StopOnRequest

CPU = torch.device("cpu")


def synthetic(n: int = 320, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise images whose digit is where a bright 6x6 square sits (ten places): learnable in a few epochs."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    images = torch.rand(n, 1, 28, 28, generator=generator) * 0.3
    for i, label in enumerate(labels.tolist()):
        row, col = divmod(label, 5)
        images[i, 0, 4 + 12 * row : 10 + 12 * row, 1 + 5 * col : 7 + 5 * col] += 1.0
    return images, labels


def batches(n: int = 320, batch_size: int = 32, shuffle: bool = False, seed: int = 0) -> data.InMemoryBatches:
    images, labels = synthetic(n, seed)
    return data.InMemoryBatches(images, labels, batch_size, shuffle=shuffle, generator=torch.Generator().manual_seed(seed))


def parts_for(model: nn.Module, lr: float = 0.05, **changes) -> engine.TrainParts:
    return engine.TrainParts(loss_fn=nn.CrossEntropyLoss(), optimizer=torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9), **changes)


class Recorder(engine.Callback):
    """Records ``(event, run.state.epoch)`` for every event (``after_step`` as ``run.state.step`` unless ``steps`` is false)."""

    def __init__(self, steps: bool = True) -> None:
        self.events: list[tuple[str, int]] = []
        self.steps = steps

    def before_fit(self, run: engine.Run) -> None:
        self.events.append(("before_fit", run.state.epoch))

    def before_epoch(self, run: engine.Run) -> None:
        self.events.append(("before_epoch", run.state.epoch))

    def after_step(self, run: engine.Run) -> None:
        if self.steps:
            self.events.append(("after_step", run.state.step))

    def after_epoch(self, run: engine.Run) -> None:
        self.events.append(("after_epoch", run.state.epoch))

    def after_fit(self, run: engine.Run) -> None:
        self.events.append(("after_fit", run.state.epoch))


def test_train_batch_takes_one_optimizer_step() -> None:
    torch.manual_seed(0)
    model = VGG(hidden_units=4).train()
    images, labels = synthetic(16)
    parts = parts_for(model, scheduler=None)
    parts.scheduler = torch.optim.lr_scheduler.StepLR(parts.optimizer, step_size=1, gamma=0.5)
    before = [p.detach().clone() for p in model.parameters()]
    loss, logits = engine.train_batch(model, images, labels, parts)
    assert logits.shape == (16, 10) and not logits.requires_grad and loss.dim() == 0
    assert loss.item() == pytest.approx(nn.functional.cross_entropy(logits, labels).item(), rel=1e-5), "loss of the forward pass"
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)), "every weight moved"
    assert parts.lr == pytest.approx(0.025), "the schedule stepped once"


def test_evaluate_matches_a_hand_count() -> None:
    torch.manual_seed(0)
    model = VGG(hidden_units=4).eval()
    images, labels = synthetic(100)
    loss, accuracy = engine.evaluate(model, batches(100, 30), CPU)
    with torch.no_grad():
        logits = model(images)
    assert accuracy == pytest.approx((logits.argmax(1) == labels).float().mean().item())
    assert loss == pytest.approx(nn.functional.cross_entropy(logits, labels).item(), rel=1e-5), "plain cross-entropy by default"
    smoothed, _ = engine.evaluate(model, batches(100, 30), CPU, loss_fn=nn.CrossEntropyLoss(label_smoothing=0.5))
    assert smoothed != pytest.approx(loss)


def test_train_epoch_logs_every_few_steps_and_at_the_end() -> None:
    torch.manual_seed(0)
    model = VGG(hidden_units=4, batch_norm=True)
    parts = parts_for(model)
    steps = Recorder()
    run = engine.Run(model, parts, epochs=1, log_every=4, callbacks=[steps])
    loss, accuracy = engine.train_epoch(run, batches(320, 32, shuffle=True))  # 10 batches
    state = run.state
    assert state.step == 10 and state.epoch == 0, "train_epoch counts steps; train() closes the epoch"
    assert state.step_history["step"] == [4, 8, 10] and steps.events == [("after_step", s) for s in range(1, 11)]
    assert state.step_history["epoch"] == [1, 1, 1] and state.step_history["lr"] == [0.05] * 3
    assert all(math.isfinite(v) for v in state.step_history["train_loss"]) and 0 < loss and 0 <= accuracy <= 1


def test_train_returns_history_with_epoch_zero_and_learns() -> None:
    torch.manual_seed(0)
    model = VGG(hidden_units=8, batch_norm=True)
    lines: list[str] = []
    events = Recorder(steps=False)
    run = engine.Run(model, parts_for(model), epochs=3, callbacks=[PrintEpochs(lines.append), events])
    state = engine.train(run, batches(320, 32, shuffle=True), batches(200, 50, seed=1))
    history = state.history
    assert history["epoch"] == [0, 1, 2, 3] and state.epoch == 3 and state.step == 30
    epoch_events = [("after_epoch", 0)] + [e for n in (1, 2, 3) for e in (("before_epoch", n - 1), ("after_epoch", n))]
    assert events.events == [("before_fit", 0), *epoch_events, ("after_fit", 3)], "the five events, in order"
    assert set(history) == set(engine.HISTORY_KEYS) and all(len(v) == 4 for v in history.values())
    assert history["seconds"][0] == 0.0 and all(s > 0 for s in history["seconds"][1:])
    assert history["train_loss"][3] < history["train_loss"][0]
    assert history["val_acc"][3] > 0.9 > 0.3 > history["val_acc"][0], history["val_acc"]
    assert len(lines) == 4 and lines[0].startswith("epoch  0") and "val loss" in lines[0]
    assert state.step_history["step"] == [10, 20, 30]


def test_bf16_autocast_channels_last_and_augmentation_train() -> None:
    model = VGG(hidden_units=8, batch_norm=True).to(memory_format=torch.channels_last)
    parts = parts_for(
        model,
        autocast_dtype=torch.bfloat16,
        channels_last=True,
        augment=RandomAffine(1.0, 5.0, 0.05, generator=torch.Generator().manual_seed(0)),
    )
    loss, accuracy = engine.train_epoch(engine.Run(model, parts, epochs=1), batches(128, 32, shuffle=True))
    assert 0 < loss < 2.6 and 0 <= accuracy <= 1


def test_divergence_stops_with_a_clear_message() -> None:
    model = VGG(hidden_units=8)
    with pytest.raises(TrainingDiverged, match="learning rate is probably too high") as caught:
        engine.train_epoch(engine.Run(model, parts_for(model, lr=1e6), 5, engine.TrainingState(epoch=4)), batches(128))
    assert caught.value.epoch == 5 and caught.value.checkpoint_path is None


def test_stop_request_interrupts_after_the_current_batch() -> None:
    model = VGG(hidden_units=4)
    asked = iter([False, False, True])
    events = Recorder(steps=False)
    run = engine.Run(model, parts_for(model), 2, callbacks=[StopOnRequest(lambda: next(asked)), events])
    with pytest.raises(TrainingInterrupted) as caught:
        engine.train(run, batches(320), batches(50))
    assert caught.value.epoch == 1 and run.state.step == 2, "checked before the epoch and after each batch"
    assert events.events[-1] == ("after_fit", 0), "after_fit runs when training stops early too"
    error = caught.value.with_checkpoint(None, None)
    assert isinstance(error, TrainingStopped) and type(error) is TrainingInterrupted and error.epoch == 1


def test_random_affine_keeps_shape_and_mass() -> None:
    images = data.scale_images(torch.zeros(8, 28, 28, dtype=torch.uint8), "unit")
    images[:, :, 10:18, 10:18] = 1.0
    augmented = RandomAffine(max_shift=2, max_rotation=10, max_scale=0.1, generator=torch.Generator().manual_seed(0))(images)
    assert augmented.shape == images.shape
    assert not torch.equal(augmented, images)
    assert torch.allclose(augmented.sum((1, 2, 3)), images.sum((1, 2, 3)), rtol=0.25)
    identity = RandomAffine(max_shift=0, max_rotation=0, max_scale=0)(images)
    assert torch.allclose(identity, images, atol=1e-5)


def test_predict_is_batched_and_consistent() -> None:
    model = VGG(hidden_units=4)
    images, labels = synthetic(100)
    predictions = analysis.predict(model, batches(100, 30), CPU)
    assert predictions.probabilities.shape == (100, 10)
    assert torch.allclose(predictions.probabilities.sum(1), torch.ones(100), atol=1e-5)
    assert torch.equal(predictions.predicted, predictions.probabilities.argmax(1))
    assert predictions.targets.tolist() == labels.tolist()


class BreakTheModel(engine.Callback):
    """After the last step of epoch ``epoch``, sets every weight to NaN: only the validation split can show it."""

    def __init__(self, epoch: int, steps_per_epoch: int) -> None:
        self.last_step = epoch * steps_per_epoch

    def after_step(self, run: engine.Run) -> None:
        if run.state.step == self.last_step:
            with torch.no_grad():
                for parameter in run.model.parameters():
                    parameter.fill_(math.nan)


def test_a_model_broken_by_an_epochs_last_step_is_caught_on_validation() -> None:
    model, train_batches = VGG(hidden_units=4), batches(128)
    events = Recorder(steps=False)
    run = engine.Run(model, parts_for(model), 3, callbacks=[BreakTheModel(2, len(train_batches)), events])
    with pytest.raises(TrainingDiverged, match="validation loss became NaN or infinite") as caught:
        engine.train(run, train_batches, batches(64))
    assert caught.value.epoch == 2
    assert run.state.history["epoch"] == [0, 1], "the broken epoch is not recorded"
    assert ("after_epoch", 2) not in events.events, "no callback (a checkpoint writer) sees the broken epoch"
    assert all(math.isfinite(v) for key in ("train_loss", "val_loss") for v in run.state.history[key])


def test_callbacks_run_by_order_then_as_added() -> None:
    seen: list[str] = []

    def named(name: str, order: int) -> engine.Callback:
        callback = type(name, (engine.Callback,), {"order": order, "after_fit": lambda self, run: seen.append(name)})
        return callback()

    model = VGG(hidden_units=2)
    run = engine.Run(model, parts_for(model), 0, callbacks=[named("late", 90), named("first", -10), named("a", 0), named("b", 0)])
    run.emit("after_fit")
    assert seen == ["first", "a", "b", "late"]


def test_a_failing_after_fit_does_not_hide_why_training_stopped() -> None:
    class FailsToTidyUp(engine.Callback):
        def after_fit(self, run: engine.Run) -> None:
            raise RuntimeError("disk gone")

    model = VGG(hidden_units=2)
    asked = iter([False, True])
    run = engine.Run(model, parts_for(model), 2, callbacks=[StopOnRequest(lambda: next(asked)), FailsToTidyUp()])
    with pytest.raises(TrainingInterrupted) as caught:
        engine.train(run, batches(320), batches(50))
    assert caught.value.__notes__ == ["a callback's after_fit then failed too: RuntimeError: disk gone"]
    finished = engine.Run(model, parts_for(model), 0, callbacks=[FailsToTidyUp()])
    with pytest.raises(RuntimeError, match="disk gone"):  # when training ends normally, the failure is the error
        engine.train(finished, batches(64), batches(50))
