"""Saving and loading checkpoints: written atomically, read with ``weights_only=True`` so a file can never run code."""

from __future__ import annotations

import io
import math
import os
import pickle
import platform
import random
import re
import reprlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import mnist_cnn
from mnist_cnn.errors import CheckpointError, ConfigError
from mnist_cnn.files import atomic_write_bytes
from mnist_cnn.model import build_model
from mnist_cnn.text import display_name, escape_text

CHECKPOINT_FORMAT = "mnist-cnn-checkpoint"
CHECKPOINT_VERSION = 1

#: What the seed project's bare ``state_dict`` (``mnist_VGG.pth``) stands for.
SEED_ARCH = "vgg"
SEED_INPUT_SCALING = "unit"

#: What a checkpoint may ask for, checked before anything is built: ``(low, high)`` for whole numbers, a tuple of
#: names for choices, ``bool`` for switches. The largest models these allow are far beyond anything useful on
#: MNIST (VGG with 512 channels: 12M weights, 48 MB; SmallCNN 512/512/4096: 53M weights, 210 MB),
#: yet a file cannot make us allocate gigabytes.
OPTION_BOUNDS: dict[str, dict[str, tuple[int, int] | tuple[str, ...] | type]] = {
    "vgg": {
        "hidden_units": (1, 512),
        "block2_units": (1, 512),
        "in_channels": (1, 1),
        "num_classes": (10, 10),
        "batch_norm": bool,
        "batch_norm_at": ("conv", "block"),
    },
    "small_cnn": {
        "channels1": (1, 512),
        "channels2": (1, 512),
        "fc_units": (1, 4096),
        "num_classes": (10, 10),
        "batch_norm": bool,
        "batch_norm_at": ("conv", "block"),
    },
}
#: The most a checkpoint may hold once unpacked (all tensors and the pickle together), checked on the archive's
#: directory before anything is inflated: the largest model above with Adam's two moments fits well within it.
MAX_CHECKPOINT_BYTES = 1 << 30
#: The most the pickled structure (everything but the tensors' bytes) may take unpacked.
MAX_PICKLE_BYTES = 64 << 20
#: Weights stored in these types are loaded (cast to float32 by ``load_state_dict``); float64 and complex are refused,
#: since a model meant to be float32 that carries them was not written by this project and casting would hide that.
ACCEPTED_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
#: Largest epoch count a training state may claim.
MAX_EPOCHS = 100_000
#: The most values (containers, numbers, texts, tensors) a checkpoint's structure may stand for, counted as the tree
#: that reading it hands on: a list the pickle refers to ten times counts ten times. A real checkpoint holds a few
#: tens of thousands (the step history of a long run); ten references to ten references, fifteen levels deep, fit
#: in 190 KB of pickle yet stand for 10**15, which every walk over the value (checks, JSON, plots) would visit.
MAX_PAYLOAD_VALUES = 1_000_000
#: The deepest a checkpoint's structure may nest (a real one nests 6 levels: training_state.optimizer.state[0]...).
MAX_PAYLOAD_DEPTH = 32


def versions() -> dict[str, str]:
    """Library versions recorded in every checkpoint."""
    import torchvision  # here, not at the top: loading a checkpoint to predict does not need it

    return {
        "mnist_cnn": mnist_cnn.__version__,
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "python": platform.python_version(),
    }


def build_payload(
    model: nn.Module,
    *,
    arch: str,
    model_options: dict[str, Any],
    input_scaling: str,
    config: dict[str, Any] | None = None,
    history: dict[str, list] | None = None,
    metrics: dict[str, Any] | None = None,
    step_history: dict[str, list] | None = None,
    training_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything needed to rebuild and use a model, as plain containers and tensors.

    Args:
        model: The trained network (its ``state_dict`` is stored on the CPU).
        arch: Architecture name for :func:`mnist_cnn.model.build_model`.
        model_options: Its constructor options.
        input_scaling: How images were scaled for this model (``"unit"`` or ``"standard"``).
        config: The training configuration.
        history: Per-epoch metrics.
        step_history: Training loss and learning rate every few steps.
        metrics: Final metrics.
        training_state: Optimizer/scheduler/RNG state and epoch, for resuming.
    """
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "arch": arch,
        "model_options": dict(model_options),
        "input_scaling": input_scaling,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": config or {},
        "history": history or {},
        "step_history": step_history or {},
        "metrics": metrics or {},
        "training_state": training_state,
        "versions": versions(),
    }


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temporary file, flush, rename): a crash leaves the old file intact.

    Returns:
        The path written.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(target, buffer.getvalue())
    return target


@dataclass
class LoadedCheckpoint:
    """A model rebuilt from a checkpoint, with what was recorded beside it."""

    model: nn.Module
    arch: str
    model_options: dict[str, Any]
    input_scaling: str
    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    history: dict[str, list] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    step_history: dict[str, list] = field(default_factory=dict)
    payload: dict[str, Any] = field(default_factory=dict)

    @property
    def is_seed_format(self) -> bool:
        """True when the file was a bare ``state_dict`` like the seed project's."""
        return self.payload.get("format") != CHECKPOINT_FORMAT


def read_checkpoint_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint file safely (``weights_only=True``) onto the CPU.

    Raises:
        CheckpointError: Missing, unreadable, corrupt, unsafe, or not a dict.
    """
    source = Path(path)
    shown = display_name(source)
    try:
        if not source.exists():
            raise CheckpointError(f"checkpoint not found: {shown}")
        if not source.is_file():
            raise CheckpointError(f"checkpoint {shown} is not a file")
        mappable = check_archive_size(source)
        if _utf8_name(source):
            # mmap: tensors stay in the file until read, so shapes can be checked before any weight is in memory
            loaded = torch.load(source, map_location="cpu", weights_only=True, mmap=mappable)
        else:  # torch cannot open a name that is not UTF-8 itself (mmap needs the name): hand it an open file
            with source.open("rb") as handle:
                loaded = torch.load(handle, map_location="cpu", weights_only=True)
    except PermissionError as error:
        raise CheckpointError(f"cannot read checkpoint {shown}: {error.strerror or error}") from None
    except pickle.UnpicklingError as error:
        text = str(error)
        if "Unsupported global" in text or "GLOBAL" in text:
            found = re.search(r"GLOBAL ([\w.]+)", text)
            culprit = f" ({found.group(1)})" if found else ""
            raise CheckpointError(
                f"{shown} is not a safe checkpoint: it holds Python objects{culprit} that weights-only loading refuses to run"
            ) from None
        raise CheckpointError(f"{shown} is not a readable PyTorch checkpoint (corrupt, truncated or another kind of file)") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, AttributeError) as error:
        raise CheckpointError(
            f"{shown} is not a readable PyTorch checkpoint (corrupt, truncated or another kind of file: {type(error).__name__})"
        ) from None
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{shown} is not a checkpoint: it holds a {type(loaded).__name__}, not a dict")
    check_structure_size(loaded, source)
    return loaded


def _children(value: Any) -> Any:
    """The values a container holds (a dict's keys and values), or ``()`` for anything else."""
    if isinstance(value, dict):
        return (item for pair in value.items() for item in pair)
    if isinstance(value, (list, tuple, set, frozenset)):
        return value
    return ()


def check_structure_size(value: Any, source: Path) -> None:
    """Refuse a structure that stands for more than :data:`MAX_PAYLOAD_VALUES` values or nests deeper than
    :data:`MAX_PAYLOAD_DEPTH`, counting shared references as often as they occur, in bounded time.

    Each container is walked once (by ``id``) and its unfolded size remembered, so a value referred to many
    times costs one visit; every step adds at least one to the running count, so the walk stops after at most
    :data:`MAX_PAYLOAD_VALUES` steps whatever the file holds. Nothing is ``repr``-ed.

    Args:
        value: What the pickle held.
        source: The file, for messages.

    Raises:
        CheckpointError: Too many values, too deep, or a container that holds itself.
    """
    shown = display_name(source)
    sizes: dict[int, int] = {}  # id -> unfolded size of a finished container; the containers live as long as `value`
    open_ids = {id(value)}
    stack: list[list[Any]] = [[value, iter(_children(value)), 1]]  # [container, its children, its size so far]
    total = 1  # the values counted so far, in finished and open containers alike
    while stack:
        frame = stack[-1]
        child = next(frame[1], _DONE)
        if child is _DONE:
            stack.pop()
            open_ids.discard(id(frame[0]))
            sizes[id(frame[0])] = frame[2]
            if stack:
                stack[-1][2] += frame[2]
            continue
        if not isinstance(child, _CONTAINERS):
            added = 1
        elif id(child) in sizes:
            added = sizes[id(child)]
        elif id(child) in open_ids:
            raise CheckpointError(f"{shown} is not a usable checkpoint: a container in it holds itself")
        elif len(stack) >= MAX_PAYLOAD_DEPTH:
            raise CheckpointError(f"{shown} is not a usable checkpoint: it nests deeper than {MAX_PAYLOAD_DEPTH} levels")
        else:
            open_ids.add(id(child))
            stack.append([child, iter(_children(child)), 1])
            added = 0  # counted in its own frame, below
            total += 1
        frame[2] += added
        total += added
        if total > MAX_PAYLOAD_VALUES:
            raise CheckpointError(
                f"{shown} is not a usable checkpoint: its structure stands for more than {MAX_PAYLOAD_VALUES:,} values "
                "(counting each shared reference where it occurs); it was not read further"
            )


_DONE = object()
_CONTAINERS = (dict, list, tuple, set, frozenset)


def _utf8_name(path: Path) -> bool:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_archive_size(source: Path) -> bool:
    """Refuse a checkpoint that would unpack to more than :data:`MAX_CHECKPOINT_BYTES`, from the zip directory alone.

    A few megabytes of compressed zeros can stand for gigabytes of tensor; the sizes the archive declares are
    what the loader allocates, so they are summed before anything is inflated.

    Returns:
        Whether the file can be memory-mapped (a zip archive whose entries are stored, as ``torch.save`` writes them).

    Raises:
        CheckpointError: The declared sizes exceed the bounds.
    """
    shown = display_name(source)
    if not zipfile.is_zipfile(source):
        # the legacy (pre-1.6) format stores tensors uncompressed, so the file size bounds what loading allocates
        size = source.stat().st_size
        if size > MAX_CHECKPOINT_BYTES:
            raise CheckpointError(f"{shown} is too large for a checkpoint: {size:,} bytes, more than the {MAX_CHECKPOINT_BYTES:,} allowed")
        return False
    try:
        with zipfile.ZipFile(source) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointError(f"{shown} is not a readable PyTorch checkpoint (corrupt zip archive: {escape_text(str(error))})") from None
    total = sum(entry.file_size for entry in entries)
    if total > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(
            f"{shown} would unpack to {total:,} bytes, more than the {MAX_CHECKPOINT_BYTES:,} a checkpoint may hold; it was not loaded"
        )
    pickled = sum(entry.file_size for entry in entries if entry.filename.endswith("data.pkl"))
    if pickled > MAX_PICKLE_BYTES:
        raise CheckpointError(f"{shown} holds a {pickled:,}-byte pickle, more than the {MAX_PICKLE_BYTES:,} a checkpoint may hold")
    return all(entry.compress_type == zipfile.ZIP_STORED for entry in entries)


def _infer_bare_state_dict(state_dict: dict[str, Any], source: Path) -> tuple[str, dict[str, Any]]:
    """Recognise a bare VGG ``state_dict`` (the seed's format) and infer its options."""
    shown = display_name(source)
    first = state_dict.get("conv_block_1.0.weight")
    if not isinstance(first, torch.Tensor) or first.dim() != 4:
        sample = ", ".join(_key_name(key) for key in list(state_dict)[:4])
        raise CheckpointError(f"{shown} is neither an mnist-cnn checkpoint nor a VGG state_dict (its first keys are: {sample or 'none'})")
    options: dict[str, Any] = {"hidden_units": int(first.shape[0])}
    if "conv_block_1.1.running_mean" in state_dict:
        options["batch_norm"] = True
    return SEED_ARCH, options


def _key_name(key: str) -> str:
    """A weight's name from a file, cut to a readable length and escaped, so it prints as part of one line."""
    return escape_text(key if len(key) <= 60 else key[:57] + "...")


def _describe_mismatch(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> str | None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [
        f"{k} {list(state_dict[k].shape)} vs {list(expected[k].shape)}"
        for k in expected
        if k in state_dict and isinstance(state_dict[k], torch.Tensor) and state_dict[k].shape != expected[k].shape
    ]
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} weight(s) such as {', '.join(missing[:3])}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected weight(s) such as {', '.join(_key_name(k) for k in unexpected[:3])}")
    if wrong_shape:
        parts.append(f"shapes differ ({'; '.join(wrong_shape[:3])})")
    return "; ".join(parts) or None


def load_checkpoint(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> LoadedCheckpoint:
    """Load a model from an mnist-cnn checkpoint or from a bare seed-format ``state_dict``.

    Args:
        path: The ``.pt``/``.pth`` file.
        device: Where to put the model.

    Returns:
        The model in eval mode with its recorded options, input scaling, metrics and history.

    Raises:
        CheckpointError: The file is missing, corrupt, unsafe, or does not fit the architecture it names.
    """
    source = Path(path)
    shown = display_name(source)
    payload = read_checkpoint_file(source)
    if payload.get("format") == CHECKPOINT_FORMAT:
        arch, options, scaling, state_dict = validate_payload(payload, source)
    elif payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        if not all(isinstance(key, str) for key in payload):
            raise CheckpointError(f"{shown} is not a model state_dict: some of its weights are named by something other than text")
        arch, options = _infer_bare_state_dict(payload, source)
        scaling, state_dict = SEED_INPUT_SCALING, payload
    else:
        raise CheckpointError(f"{shown} is not an mnist-cnn checkpoint nor a model state_dict")
    check_model_options(arch, options, source)
    try:
        # on the meta device: shapes and dtypes only, no memory, whatever the options say
        with torch.device("meta"):
            expected = build_model(arch, **options)
    except ConfigError as error:
        raise CheckpointError(f"{shown} names a model this version cannot build: {escape_text(str(error))}") from None
    mismatch = _describe_mismatch(expected, state_dict)
    if mismatch:
        described = ", ".join(f"{k}={v}" for k, v in options.items())
        raise CheckpointError(f"{shown} does not fit architecture {arch}({described}): {mismatch}")
    check_weights(expected, state_dict, source)
    model = build_model(arch, **options)
    model.load_state_dict(state_dict)
    model.to(device).eval()
    ours = payload.get("format") == CHECKPOINT_FORMAT
    return LoadedCheckpoint(
        model=model,
        arch=arch,
        model_options=options,
        input_scaling=scaling,
        path=source,
        config=payload.get("config", {}) if ours else {},
        history=payload.get("history", {}) if ours else {},
        metrics=payload.get("metrics", {}) if ours else {},
        step_history=payload.get("step_history", {}) if ours else {},
        payload=payload,
    )


# --- Validation: every field a file can hold is checked before it is used, naming the file and the field. ---


class _ShortRepr(reprlib.Repr):
    """``reprlib`` cut short at every level, so describing a value visits a handful of its items, never all of them."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxlist, self.maxtuple, self.maxdict, self.maxset = 2, 4, 4, 4, 4
        self.maxstring, self.maxother, self.maxlong = 30, 30, 30

    def repr_int(self, x: int, level: int) -> str:
        # repr() of an integer past 4,300 digits raises ValueError; its size says enough
        return f"<{x.bit_length()}-bit integer>" if x.bit_length() > 64 else repr(x)


_SHORT_REPR = _ShortRepr()


def _short(value: Any) -> str:
    """A value for an error message: its type and a repr cut to a readable length, escaped to print on one line."""
    if isinstance(value, torch.Tensor):
        return f"tensor {list(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    try:
        text = _SHORT_REPR.repr(value)
    except (ValueError, RecursionError, TypeError):
        text = "..."
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{escape_text(text)} ({type(value).__name__})"


def _invalid(source: Path, field_name: str, problem: str) -> CheckpointError:
    return CheckpointError(f"{display_name(source)} has an invalid {escape_text(field_name)}: {problem}")


def _quoted(name: str) -> str:
    """A name from a file, quoted as ``repr`` does, cut to a readable length and escaped."""
    return escape_text(repr(name if len(name) <= 40 else name[:37] + "..."))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_payload(payload: dict[str, Any], source: Path) -> tuple[str, dict[str, Any], str, dict[str, torch.Tensor]]:
    """Check the fields of an mnist-cnn checkpoint's payload have the types this version writes.

    Args:
        payload: What :func:`read_checkpoint_file` returned (its ``format`` is :data:`CHECKPOINT_FORMAT`).
        source: The file, for messages.

    Returns:
        ``(arch, model_options, input_scaling, state_dict)``.

    Raises:
        CheckpointError: A field is missing or of the wrong type; the message names it.
    """
    shown = display_name(source)
    for key in ("arch", "model_options", "input_scaling", "state_dict"):
        if key not in payload:
            raise CheckpointError(f"{shown} is an incomplete mnist-cnn checkpoint: it lacks {key!r}")
    version = payload.get("format_version", CHECKPOINT_VERSION)
    if not _is_int(version) or version < 1:
        raise _invalid(source, "format_version", f"expected a whole number, got {_short(version)}")
    if version > CHECKPOINT_VERSION:
        raise CheckpointError(f"{shown} has checkpoint format version {version}, newer than this version reads ({CHECKPOINT_VERSION})")
    arch, options, scaling, state_dict = payload["arch"], payload["model_options"], payload["input_scaling"], payload["state_dict"]
    if not isinstance(arch, str):
        raise _invalid(source, "arch", f"expected a name such as 'vgg', got {_short(arch)}")
    if not isinstance(options, dict) or not all(isinstance(key, str) for key in options):
        raise _invalid(source, "model_options", f"expected a dict of named options, got {_short(options)}")
    from mnist_cnn.data import INPUT_SCALINGS  # here: data imports torchvision, which only loading needs

    if not isinstance(scaling, str) or scaling not in INPUT_SCALINGS:
        raise _invalid(source, "input_scaling", f"expected one of {', '.join(INPUT_SCALINGS)}, got {_short(scaling)}")
    if not isinstance(state_dict, dict) or not state_dict:
        raise _invalid(source, "state_dict", f"expected a dict of weight tensors, got {_short(state_dict)}")
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise _invalid(source, "state_dict", f"entry {_short(key)} holds {_short(value)}, not a tensor")
    for key in ("config", "history", "metrics", "step_history"):
        value = payload.get(key)
        if value is not None and not isinstance(value, dict):
            raise _invalid(source, key, f"expected a dict, got {_short(value)}")
        if value is not None and not _is_plain(value):
            # these are written to metrics.json and plotted: only what JSON can hold
            raise _invalid(source, key, "it holds values other than text, numbers, lists and dicts (or whole numbers past 64 bits)")
    _check_history_lists(payload.get("history") or {}, source)
    return arch, dict(options), scaling, state_dict


def _is_plain(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` is made only of what JSON can hold (and is not absurdly nested)."""
    if depth > 20:
        return False
    if _is_int(value):
        return -(1 << 63) <= value < (1 << 63)  # JSON readers and plots take 64-bit integers; a 5,000-digit one breaks them
    if value is None or isinstance(value, (str, float, bool)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _is_plain(item, depth + 1) for key, item in value.items())
    return False


def _check_history_lists(history: dict[str, Any], source: Path) -> None:
    """Per-epoch lists of numbers, all as long as ``history['epoch']`` (lists of dicts, such as step records, aside)."""
    epochs = history.get("epoch")
    for key, values in history.items():
        if not isinstance(values, list) or not all(isinstance(v, dict) or _is_real(v) for v in values):
            raise _invalid(source, f"history[{key!r}]", f"expected a list of numbers, got {_short(values)}")
        if isinstance(epochs, list) and values and not isinstance(values[0], dict) and len(values) != len(epochs):
            raise _invalid(source, f"history[{key!r}]", f"it has {len(values)} entries for {len(epochs)} epoch(s)")


def check_model_options(arch: str, options: dict[str, Any], source: Path) -> None:
    """Check architecture options against :data:`OPTION_BOUNDS` before any model is built.

    Raises:
        CheckpointError: An unknown architecture or option, a value of the wrong type, or out of bounds.
    """
    shown = display_name(source)
    if arch not in OPTION_BOUNDS:
        raise CheckpointError(f"{shown} names a model this version cannot build: unknown architecture {_quoted(arch)}")
    bounds = OPTION_BOUNDS[arch]
    for name, value in options.items():
        if name not in bounds:
            raise CheckpointError(
                f"{shown} names a model this version cannot build: {arch} has no option {_quoted(name)} (it has {', '.join(bounds)})"
            )
        bound = bounds[name]
        if bound is bool:
            if not isinstance(value, bool):
                raise _invalid(source, f"model_options.{name}", f"expected true or false, got {_short(value)}")
            continue
        if all(isinstance(choice, str) for choice in bound):  # type: ignore[union-attr]
            if value not in bound:  # type: ignore[operator]
                raise _invalid(source, f"model_options.{name}", f"expected one of {', '.join(bound)}, got {_short(value)}")  # type: ignore[arg-type]
            continue
        low, high = bound  # type: ignore[misc]
        if not _is_int(value):
            raise _invalid(source, f"model_options.{name}", f"expected a whole number, got {_short(value)}")
        if not low <= value <= high:
            allowed = f"must be {low}" if low == high else f"must be from {low} to {high}"
            raise _invalid(source, f"model_options.{name}", f"{value} is out of bounds ({allowed}); it was not built")


def check_weights(expected: nn.Module, state_dict: dict[str, torch.Tensor], source: Path) -> None:
    """Check each weight's dtype against the model's and that every float value is finite.

    Args:
        expected: The model (on any device, ``meta`` included) whose ``state_dict`` says what to expect;
            shapes have already been compared.
        state_dict: The file's weights.
        source: The file, for messages.

    Raises:
        CheckpointError: float64/complex/integer weights where float32 is expected, or NaN/infinite values.
    """
    shown = display_name(source)
    for name, reference in expected.state_dict().items():
        tensor = state_dict[name]
        if reference.dtype.is_floating_point:
            if tensor.dtype not in ACCEPTED_FLOAT_DTYPES:
                raise CheckpointError(
                    f"{shown} holds {name} as {str(tensor.dtype).removeprefix('torch.')}, not float32: "
                    "this project's models are float32 and such a file was not written by it"
                )
            if not bool(torch.isfinite(tensor).all()):
                raise CheckpointError(f"{shown} holds NaN or infinite values in {name}: the model is broken and was not loaded")
        elif tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
            raise CheckpointError(f"{shown} holds {name} as {str(tensor.dtype).removeprefix('torch.')}, expected whole numbers")


def validate_training_state(
    state: Any,
    path: str | os.PathLike[str],
    *,
    model: nn.Module | None = None,
    config: dict[str, Any] | None = None,
    history: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Check a checkpoint's resume state field by field, so a tampered file fails before training, not during it.

    Args:
        state: ``payload["training_state"]``.
        path: The checkpoint file, for messages.
        model: The loaded model: optimizer state must fit its parameters.
        config: The recorded training configuration (it must rebuild a valid ``TrainConfig``).
        history: The recorded per-epoch history (lists of numbers, one entry per finished epoch).

    Returns:
        ``state``, unchanged.

    Raises:
        CheckpointError: Naming the file and the first field that is missing or wrong.
    """
    source = Path(path)
    if not isinstance(state, dict):
        raise _invalid(source, "training_state", f"expected a dict, got {_short(state)}")
    epoch = state.get("epoch")
    if not _is_int(epoch) or not 0 <= epoch <= MAX_EPOCHS:
        raise _invalid(source, "training_state.epoch", f"expected a whole number from 0 to {MAX_EPOCHS}, got {_short(epoch)}")
    for key in ("deterministic",):
        if state.get(key) is not None and not isinstance(state[key], bool):
            raise _invalid(source, f"training_state.{key}", f"expected true or false, got {_short(state[key])}")
    if "world_size" in state and (not _is_int(state["world_size"]) or state["world_size"] < 1):
        raise _invalid(source, "training_state.world_size", f"expected a whole number of at least 1, got {_short(state['world_size'])}")
    epochs = _validate_config(config, source) if config is not None else None
    if epochs is not None and epoch > epochs:
        raise _invalid(source, "training_state.epoch", f"{epoch} is beyond the {epochs} epoch(s) the run was configured for")
    _validate_optimizer(state.get("optimizer"), source, model)
    _validate_scheduler(state.get("scheduler"), source, epoch, epochs)
    _validate_rng(state.get("rng"), source)
    if history is not None:
        _validate_history(history, source, epoch)
    return state


def _validate_config(config: Any, source: Path) -> int:
    from mnist_cnn.config import TrainConfig  # here: presets imports the data module, which loading alone does not need

    if not isinstance(config, dict) or not config:
        raise _invalid(source, "config", f"expected the run's training configuration, got {_short(config)}")
    try:
        rebuilt = TrainConfig.from_dict(config)
        rebuilt.validate()
        for name in ("epochs", "batch_size", "eval_batch_size", "seed"):
            if not _is_int(getattr(rebuilt, name)):
                raise ConfigError(f"{name} must be a whole number, got {_short(getattr(rebuilt, name))}")
        if not _is_real(rebuilt.lr) or not math.isfinite(rebuilt.lr):
            raise ConfigError(f"lr must be a finite number, got {_short(rebuilt.lr)}")
    except (TypeError, ValueError, ConfigError) as error:
        raise _invalid(source, "config", str(error)) from None
    return int(rebuilt.epochs)


def _validate_optimizer(optimizer: Any, source: Path, model: nn.Module | None) -> None:
    name = "training_state.optimizer"
    valid = isinstance(optimizer, dict) and isinstance(optimizer.get("state"), dict) and isinstance(optimizer.get("param_groups"), list)
    if not valid:
        raise _invalid(source, name, f"expected an optimizer state_dict with 'state' and 'param_groups', got {_short(optimizer)}")
    ids: list[int] = []
    for index, group in enumerate(optimizer["param_groups"]):
        if not isinstance(group, dict) or not isinstance(group.get("params"), list) or not all(_is_int(i) for i in group["params"]):
            raise _invalid(source, f"{name}.param_groups[{index}]", f"expected a dict listing parameter numbers, got {_short(group)}")
        lr = group.get("lr")
        if lr is not None and not (_is_real(lr) and math.isfinite(lr) and lr >= 0):
            raise _invalid(source, f"{name}.param_groups[{index}].lr", f"expected a finite number of at least 0, got {_short(lr)}")
        ids += group["params"]
    shapes = [tuple(p.shape) for p in model.parameters()] if model is not None else None
    if shapes is not None and sorted(ids) != list(range(len(shapes))):
        raise _invalid(source, f"{name}.param_groups", f"it covers {len(ids)} parameter(s), the model has {len(shapes)}")
    for key, entry in optimizer["state"].items():
        if not _is_int(key) or key not in ids or not isinstance(entry, dict):
            raise _invalid(source, f"{name}.state", f"entry {_short(key)} does not belong to a parameter")
        for slot, value in entry.items():
            where = f"{name}.state[{key}].{slot}"
            if slot == "step":
                number = value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value
                if not _is_real(number) or not math.isfinite(number) or number < 0:
                    raise _invalid(source, where, f"expected a count of steps, got {_short(value)}")
                continue
            if not isinstance(value, torch.Tensor):
                if value is None or _is_real(value):
                    continue
                raise _invalid(source, where, f"expected a tensor, got {_short(value)}")
            if not value.dtype.is_floating_point or value.dtype not in ACCEPTED_FLOAT_DTYPES:
                raise _invalid(source, where, f"expected float32 values, got {_short(value)}")
            if shapes is not None and tuple(value.shape) != shapes[key]:
                raise _invalid(source, where, f"shape {list(value.shape)} does not fit parameter {key} of shape {list(shapes[key])}")
            if not bool(torch.isfinite(value).all()):
                raise _invalid(source, where, "it holds NaN or infinite values")


#: Scheduler fields that must be whole numbers, and those that must be lists of numbers, where present.
_SCHEDULER_INTS = ("last_epoch", "_step_count", "total_steps")
_SCHEDULER_NUMBER_LISTS = ("base_lrs", "_last_lr")


def _validate_scheduler(scheduler: Any, source: Path, epoch: int, epochs: int | None) -> None:
    name = "training_state.scheduler"
    if scheduler is None:
        return
    if not isinstance(scheduler, dict) or not all(isinstance(key, str) for key in scheduler):
        raise _invalid(source, name, f"expected a scheduler state_dict or nothing, got {_short(scheduler)}")
    for key in _SCHEDULER_INTS:
        if key in scheduler and not _is_int(scheduler[key]):
            raise _invalid(source, f"{name}.{key}", f"expected a whole number, got {_short(scheduler[key])}")
    for key in _SCHEDULER_NUMBER_LISTS:
        values = scheduler.get(key)
        if values is not None and (not isinstance(values, list) or not all(_is_real(v) and math.isfinite(v) for v in values)):
            raise _invalid(source, f"{name}.{key}", f"expected a list of finite numbers, got {_short(values)}")
    total, done = scheduler.get("total_steps"), scheduler.get("last_epoch")
    if _is_int(total) and _is_int(done):
        # a one-cycle schedule raises once it is stepped past its total: catch that now rather than after an epoch
        if total < 1 or not 0 <= done <= total:
            raise _invalid(source, f"{name}.last_epoch", f"{done} steps taken of a {total}-step schedule")
        if epochs is not None and epochs > 0 and total % epochs == 0 and done != epoch * (total // epochs):
            raise _invalid(
                source,
                f"{name}.last_epoch",
                f"{done} steps do not match epoch {epoch} of a {epochs}-epoch, {total}-step schedule",
            )


def _validate_rng(rng: Any, source: Path) -> None:
    name = "training_state.rng"
    if not isinstance(rng, dict):
        raise _invalid(source, name, f"expected the random generators' states, got {_short(rng)}")
    length = torch.get_rng_state().numel()
    for key in ("torch", "generator"):
        value = rng.get(key)
        if value is None and key == "generator":
            continue
        if not isinstance(value, torch.Tensor) or value.dtype != torch.uint8 or tuple(value.shape) != (length,):
            raise _invalid(source, f"{name}.{key}", f"expected {length} bytes (a uint8 tensor), got {_short(value)}")
    cuda = rng.get("cuda")
    if cuda is not None and (not isinstance(cuda, list) or not all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in cuda)):
        raise _invalid(source, f"{name}.cuda", f"expected a list of uint8 tensors or nothing, got {_short(cuda)}")
    python = rng.get("python")
    try:
        version, internal, gauss = python  # type: ignore[misc]
        if not isinstance(internal, (list, tuple)) or not all(_is_int(v) for v in internal):
            raise TypeError("the state must be whole numbers")
        random.Random().setstate((version, tuple(internal), gauss))  # a scratch generator: the real one is untouched
    except (TypeError, ValueError, OverflowError):
        raise _invalid(source, f"{name}.python", f"expected Python's [version, [625 numbers], gauss], got {_short(python)}") from None


def _validate_history(history: Any, source: Path, epoch: int) -> None:
    if not isinstance(history, dict) or not history:
        raise _invalid(source, "history", f"expected per-epoch lists, got {_short(history)}")
    epochs = history.get("epoch")
    if not isinstance(epochs, list) or not all(_is_int(e) for e in epochs) or (epochs[-1] if epochs else 0) != epoch:
        raise _invalid(source, "history['epoch']", f"expected a list of epochs ending with {epoch}, got {_short(epochs)}")
    try:  # the keys the training loop appends to; the module may be reorganised, so look them up softly
        from mnist_cnn.engine import HISTORY_KEYS as required
    except ImportError:  # pragma: no cover
        required = ()
    for key in required:
        if key not in history:
            raise _invalid(source, "history", f"it lacks {key!r}")
    _check_history_lists(history, source)
