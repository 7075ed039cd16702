"""Reading a checkpoint file without risk: weights-only unpickling, within bounds on what the file may cost to read."""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from mnist_cnn.errors import CheckpointError
from mnist_cnn.text import display_name, escape_text

#: The most a checkpoint may hold once unpacked (all tensors and the pickle together), checked on the archive's
#: directory before anything is inflated: the largest model ``checkpoint_fields.OPTION_BOUNDS`` allows, with Adam's
#: two moments, fits well within it.
MAX_CHECKPOINT_BYTES = 1 << 30
#: The most the pickled structure (everything but the tensors' bytes) may take unpacked.
MAX_PICKLE_BYTES = 64 << 20
#: The most values (containers, numbers, texts, tensors) a checkpoint's structure may stand for, counted as the tree
#: that reading it hands on: a list the pickle refers to ten times counts ten times. A real checkpoint holds a few
#: tens of thousands (the step history of a long run); ten references to ten references, fifteen levels deep, fit
#: in 190 KB of pickle yet stand for 10**15, which every walk over the value (checks, JSON, plots) would visit.
MAX_PAYLOAD_VALUES = 1_000_000
#: The deepest a checkpoint's structure may nest (a real one nests 6 levels: training_state.optimizer.state[0]...).
MAX_PAYLOAD_DEPTH = 32


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
