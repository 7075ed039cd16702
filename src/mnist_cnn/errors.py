"""Errors a user can cause. Command-line tools print their message as one line and exit non-zero."""


class MnistCnnError(Exception):
    """Base class: a problem with the user's input, files or settings, not a bug."""


class DataError(MnistCnnError):
    """The MNIST files are missing, unreadable, truncated or corrupt."""


class CheckpointError(MnistCnnError):
    """A checkpoint is missing, corrupt, unsafe, or belongs to another model."""


class ConfigError(MnistCnnError):
    """An option or preset is not valid."""


class TrainingDiverged(MnistCnnError):
    """The loss became NaN or infinite."""


class ImageError(MnistCnnError):
    """An image file is missing, unreadable, not an image, or holds no digit."""


class TrainingInterrupted(MnistCnnError):
    """Training stopped at a safe point because the user asked (Ctrl-C); ``epoch`` is the one in progress."""

    def __init__(self, message: str, epoch: int | None = None) -> None:
        super().__init__(message)
        self.epoch = epoch
