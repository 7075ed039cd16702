"""Figures: learning curves from new and old runs, and the live plot outside a notebook."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from mnist_cnn import plots
from mnist_cnn.callbacks import LivePlot
from mnist_cnn.engine import Run, TrainingState, TrainParts

HISTORY = {
    "epoch": [0, 1, 2],
    "train_loss": [2.3, 0.6, 0.5],
    "train_acc": [0.1, 0.95, 0.97],
    "val_loss": [2.3, 0.08, 0.05],
    "val_acc": [0.1, 0.98, 0.99],
    "seconds": [0.0, 1.0, 1.0],
}
STEPS = {"step": [10, 20, 30, 40], "epoch": [1, 1, 2, 2], "train_loss": [2.0, 1.0, 0.6, 0.5], "lr": [0.1, 0.2, 0.1, 0.01]}


def test_history_with_steps_draws_loss_accuracy_and_learning_rate() -> None:
    fig = plots.plot_history(HISTORY, STEPS, label_smoothing=0.1)
    loss_ax, acc_ax, lr_ax = fig.axes
    labels = [line.get_label() for line in loss_ax.lines]
    assert labels == ["training (every few steps, label smoothing 0.1)", "validation (cross-entropy)"]
    assert list(loss_ax.lines[0].get_xdata()) == [0.5, 1.0, 1.5, 2.0], "steps placed in epochs (20 steps per epoch)"
    assert list(lr_ax.lines[0].get_ydata()) == STEPS["lr"] and lr_ax.get_ylabel() == "learning rate"
    assert [line.get_label() for line in acc_ax.lines] == ["training", "validation"]
    plt.close(fig)


def test_history_of_an_old_run_is_labelled_test() -> None:
    old = {k.replace("val_", "test_"): v for k, v in HISTORY.items()}
    fig = plots.plot_history(old)
    assert len(fig.axes) == 2
    assert [line.get_label() for line in fig.axes[0].lines] == ["training (epoch mean)", "test (cross-entropy)"]
    plt.close(fig)


def test_live_plot_outside_a_notebook_draws_nothing_but_can_give_its_figure() -> None:
    state = TrainingState(history={k: list(v) for k, v in HISTORY.items()}, step_history={k: list(v) for k, v in STEPS.items()})
    model = torch.nn.Linear(1, 1)
    run = Run(model, TrainParts(torch.nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1)), epochs=2, state=state)
    live = LivePlot(every=2)
    live.after_epoch(run)
    assert live.draws == 0
    fig = live.figure(run)
    assert len(fig.axes) == 3
    plt.close(fig)


def test_digit_grid_captions_replace_the_titles_and_mark_mistakes_red() -> None:
    images = torch.zeros(3, 28, 28)
    fig = plots.plot_digit_grid(images, [1, 2, 3], predicted=[1, 5, 3], captions=["a", "b", "c"], ncols=3)
    titles = [ax.title for ax in fig.axes]
    assert [t.get_text() for t in titles] == ["a", "b", "c"]
    assert titles[1].get_color() == "crimson" and titles[0].get_color() == "black"
    plt.close(fig)
