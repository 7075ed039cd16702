"""What each network accepts as options, and their bounds: checked in one place before any model is built."""

from __future__ import annotations

from typing import Any

from mnist_cnn.checks import OUT_OF_RANGE, NumberError, check_number, shown
from mnist_cnn.errors import ConfigError

#: Where batch norm goes: after every convolution, or once per block (after its pool).
BATCH_NORM_PLACES = ("conv", "block")

#: Each architecture's options: ``(low, high)`` for whole numbers, a tuple of names for choices, ``bool`` for switches.
#: The largest models these allow are far beyond anything useful on MNIST (VGG with 512 channels: 12M weights,
#: 48 MB; SmallCNN 512/512/4096: 53M weights, 210 MB), yet a file or a typo cannot make us allocate gigabytes.
OPTION_BOUNDS: dict[str, dict[str, tuple[int, int] | tuple[str, ...] | type]] = {
    "vgg": {
        "hidden_units": (1, 512),
        "block2_units": (1, 512),
        "in_channels": (1, 1),
        "num_classes": (10, 10),
        "batch_norm": bool,
        "batch_norm_at": BATCH_NORM_PLACES,
        "convs_per_block": (1, 3),
        "stem_units": (0, 512),
    },
    "small_cnn": {
        "channels1": (1, 512),
        "channels2": (1, 512),
        "fc_units": (1, 4096),
        "num_classes": (10, 10),
        "batch_norm": bool,
        "batch_norm_at": BATCH_NORM_PLACES,
    },
}


class OptionError(ConfigError):
    """An architecture or option that cannot be built.

    Args:
        field: ``"arch"`` or ``"model_options.<name>"``.
        unknown: The architecture or option does not exist at all (rather than having a bad value).
    """

    def __init__(self, message: str, field: str, unknown: bool = False) -> None:
        super().__init__(message)
        self.field, self.unknown = field, unknown


def check_options(arch: str, options: dict[str, Any]) -> None:
    """Check an architecture (``"vgg"`` or ``"small_cnn"``) and its constructor arguments against :data:`OPTION_BOUNDS`.

    Raises:
        OptionError: An unknown architecture or option, a value of the wrong type, or out of bounds.
    """
    if not isinstance(arch, str) or arch not in OPTION_BOUNDS:
        raise OptionError(f"unknown architecture {shown(arch)} (choose one of {', '.join(OPTION_BOUNDS)})", "arch", unknown=True)
    bounds = OPTION_BOUNDS[arch]
    if not isinstance(options, dict):
        raise OptionError(f"model options must be a dict of {', '.join(bounds)}, got {shown(options)}", "model_options")
    for name, value in options.items():
        if name not in bounds:
            raise OptionError(f"{arch} has no option {shown(name)} (it has {', '.join(bounds)})", f"model_options.{name}", unknown=True)
        problem = _problem(bounds[name], value)
        if problem:
            raise OptionError(problem, f"model_options.{name}")


def _problem(bound: tuple[int, int] | tuple[str, ...] | type, value: Any) -> str | None:
    if bound is bool:
        return None if isinstance(value, bool) else f"expected true or false, got {shown(value)}"
    if all(isinstance(choice, str) for choice in bound):  # type: ignore[union-attr]
        return None if value in bound else f"expected one of {', '.join(bound)}, got {shown(value)}"  # type: ignore[operator, arg-type]
    low, high = bound  # type: ignore[misc]
    try:
        check_number("option", value, whole=True, low=low, high=high)
    except NumberError as error:
        if error.reason != OUT_OF_RANGE:
            return f"expected a whole number, got {shown(value)}"
        return f"{value} is out of bounds ({f'must be {low}' if low == high else f'must be from {low} to {high}'}); it was not built"
    return None
