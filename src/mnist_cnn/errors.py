"""Errors a user can cause. Command-line tools print their message as one line and exit non-zero."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Self


class MnistCnnError(Exception):
    """Base class: a problem with the user's input, files or settings, not a bug."""


class DataError(MnistCnnError):
    """The MNIST files are missing, unreadable, truncated or corrupt."""


class CheckpointError(MnistCnnError):
    """A checkpoint is missing, corrupt, unsafe, or belongs to another model."""


class ConfigError(MnistCnnError):
    """An option or preset is not valid."""


class ImageError(MnistCnnError):
    """An image file is missing, unreadable, not an image, or holds no digit."""


class TrainingStopped(MnistCnnError):
    """Training ended before its last epoch; says where it stopped and what was saved.

    Args:
        epoch: The epoch in progress when training stopped (0 for the evaluation before the first).
        checkpoint_path: The last resumable checkpoint written, or ``None`` if there is none.
        checkpoint_epoch: The epoch that checkpoint ends with.
    """

    def __init__(self, message: str, *, epoch: int, checkpoint_path: Path | None = None, checkpoint_epoch: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.epoch = epoch
        self.checkpoint_path = checkpoint_path
        self.checkpoint_epoch = checkpoint_epoch

    def with_checkpoint(self, path: Path | None, epoch: int | None) -> Self:
        """The same error, saying which checkpoint was the last one written."""
        return type(self)(self.message, epoch=self.epoch, checkpoint_path=path, checkpoint_epoch=epoch)


class TrainingInterrupted(TrainingStopped):
    """Training stopped at a safe point because the user asked (Ctrl-C)."""


class TrainingDiverged(TrainingStopped):
    """The training loss became NaN or infinite."""
