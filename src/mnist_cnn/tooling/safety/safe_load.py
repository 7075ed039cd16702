"""Reading a checkpoint a user names without risk: a regular file within size bounds, every field checked before use.

:func:`read_checkpoint_file` is the ``reader`` the commands pass to :func:`mnist_cnn.checkpoint.load_checkpoint`: it
returns the payload only once its header, tensor table, record, model fields, weights' names, shapes (on the meta
device), dtypes and values have all been checked, each refusal one line naming the file. A checkpoint is a
safetensors file (:mod:`mnist_cnn.tensor_record`): nothing in it is run. The only pickle read is a bare
``state_dict`` such as the seed's ``mnist_VGG.pth``, with ``weights_only=True``, within the same size bound and,
for a zip archive, a bound on what its entries inflate to.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors

from mnist_cnn import CHECKPOINT_FORMAT, tensor_record
from mnist_cnn.checkpoint import is_torch_pickle, unreadable
from mnist_cnn.errors import CheckpointError
from mnist_cnn.text import display_name, escape_text
from mnist_cnn.tooling.safety.checkpoint_fields import validate_record
from mnist_cnn.tooling.safety.regular_files import FileTooLarge, NotARegularFile, read_regular
from mnist_cnn.tooling.safety.weights import check_model

#: The largest checkpoint read, and the most a seed-format zip archive may inflate to: the largest model
#: ``mnist_cnn.model_options.OPTION_BOUNDS`` allows, with Adam's two moments, fits well within it.
MAX_CHECKPOINT_BYTES = 1 << 30
#: The longest safetensors header (the tensor table and the record: config, curves, metrics, counters). A real one
#: is a few hundred KB; the step history of a run of 100 long epochs stays far below this.
MAX_HEADER_BYTES = 16 << 20
#: The tensor types a checkpoint may hold (safetensors names); float8 and wide unsigned types are never written
#: here, and torch cannot check some of them for NaN.
TENSOR_TYPES = frozenset({"F64", "F32", "F16", "BF16", "C64", "I64", "I32", "I16", "I8", "U8", "BOOL"})
#: The most dimensions a tensor may have (a convolution's weight has 4).
MAX_DIMENSIONS = 8
#: The deepest a record may nest (a checkpoint's deepest value, an optimizer's moment, is at 5).
MAX_DEPTH = 32
#: Bytes of the little-endian header length that opens every safetensors file.
LENGTH_BYTES = 8


def read_checkpoint_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint into its payload, within bounds, refusing a hostile file in one line naming it.

    Raises:
        CheckpointError: Missing, not a regular file, unreadable, over :data:`MAX_CHECKPOINT_BYTES`, a header over
            :data:`MAX_HEADER_BYTES` or that is not JSON, a tensor table or record that is malformed, a record field
            of the wrong kind, a model that cannot be built or weights that do not fit it (see
            :func:`mnist_cnn.tooling.safety.weights.check_model`); for a pickle: Python objects, a zip archive that
            inflates past the bound, this project's old pickle format, or anything but a flat dict of tensors.
    """
    source = Path(path)
    data = read_regular_file(source, MAX_CHECKPOINT_BYTES)
    if is_torch_pickle(data):
        check_archive_size(data, source)
        payload: dict[str, Any] = load_pickled_state_dict(data, source)
    else:
        payload = _decoded(data, source)
        validate_record(payload, source)
    check_model(payload, source)
    return payload


def _decoded(data: bytes, source: Path) -> dict[str, Any]:
    """The payload of a safetensors checkpoint's bytes, its header bounded and its tensor table checked before any tensor is read."""
    try:
        header = read_header(data)
        check_tensor_table(header, source)
        payload = tensor_record.decode(header.get("__metadata__"), load_tensors(data))
        _check_depth(payload)
    except (ValueError, SafetensorError, RuntimeError, TypeError, OverflowError) as error:
        raise unreadable(source, error) from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{display_name(source)} is not a checkpoint: its record is a {type(payload).__name__}, not a dict")
    return payload


def read_header(data: bytes) -> dict[str, Any]:
    """The parsed JSON header of a safetensors file (its tensor table and ``__metadata__``), at most :data:`MAX_HEADER_BYTES`.

    Raises:
        ValueError: Truncated, a header too long or longer than the file, or not a JSON object.
    """
    if len(data) < LENGTH_BYTES:
        raise ValueError("shorter than a safetensors header")
    length = int.from_bytes(data[:LENGTH_BYTES], "little")
    if length > MAX_HEADER_BYTES:
        raise ValueError(f"its header claims {length:,} bytes, more than the {MAX_HEADER_BYTES:,} allowed")
    if LENGTH_BYTES + length > len(data):
        raise ValueError(f"truncated: its header claims {length:,} bytes, the file holds {len(data) - LENGTH_BYTES:,}")
    try:
        header = json.loads(data[LENGTH_BYTES : LENGTH_BYTES + length].decode("utf-8"))
    except RecursionError:
        raise ValueError("its header nests too deeply to read") from None
    if not isinstance(header, dict):
        raise ValueError("its header is not a JSON object")
    return header


def _check_depth(value: Any, depth: int = 0) -> None:
    """Refuse a record nested deeper than :data:`MAX_DEPTH` (what plots, tables and ``metrics.json`` can take)."""
    if depth > MAX_DEPTH:
        raise ValueError(f"its record nests deeper than {MAX_DEPTH} levels")
    for item in value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ():
        _check_depth(item, depth + 1)


def read_regular_file(source: Path, max_bytes: int) -> bytes:
    """The bytes of ``source``, a regular file of at most ``max_bytes`` (:func:`read_regular`), its failures worded for a checkpoint.

    Raises:
        CheckpointError: Missing, not a regular file, unreadable, or larger than ``max_bytes``.
    """
    shown = display_name(source)
    try:
        return read_regular(source, max_bytes)
    except NotARegularFile as error:
        raise CheckpointError(f"checkpoint {shown} is not a file ({error.kind}); it was not read") from None
    except FileTooLarge as error:
        size = f"{error.size:,} bytes, more than the {max_bytes:,} allowed" if error.size else f"more than the {max_bytes:,} bytes allowed"
        raise CheckpointError(f"{shown} is too large for a checkpoint: {size}") from None
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {shown}") from None
    except (OSError, ValueError) as error:  # ValueError: a name with a NUL byte
        raise CheckpointError(f"cannot read checkpoint {shown}: {escape_text(getattr(error, 'strerror', None) or str(error))}") from None


def check_tensor_table(header: dict[str, Any], source: Path) -> None:
    """Refuse a tensor of a type a checkpoint never holds, or a shape that is not a short list of sizes.

    (Offsets are checked by safetensors itself: every tensor's bytes within the file, none overlapping.)

    Raises:
        CheckpointError: The first such tensor, named.
    """
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        where = f"{display_name(source)} holds tensor {escape_text(name[:60])}"
        if not isinstance(entry, dict) or entry.get("dtype") not in TENSOR_TYPES:
            dtype = entry.get("dtype") if isinstance(entry, dict) else entry
            raise CheckpointError(f"{where} of type {escape_text(str(dtype)[:20])}, which no checkpoint holds")
        shape = entry.get("shape")
        if not isinstance(shape, list) or len(shape) > MAX_DIMENSIONS or not all(_is_size(size) for size in shape):
            raise CheckpointError(f"{where} with shape {escape_text(str(shape)[:40])}, not a list of at most {MAX_DIMENSIONS} sizes")


def _is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_CHECKPOINT_BYTES


def check_archive_size(data: bytes, source: Path) -> None:
    """Refuse a ``torch.save`` zip archive that would inflate past :data:`MAX_CHECKPOINT_BYTES`, from its directory alone.

    A few megabytes of compressed zeros can stand for gigabytes of tensor; the sizes the archive declares are
    what the loader allocates, so they are summed before anything is inflated. (The older bare pickle stores
    tensors uncompressed: the file's size bounds it.)

    Raises:
        CheckpointError: A corrupt directory, or declared sizes beyond the bound.
    """
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return
    shown = display_name(source)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            total = sum(entry.file_size for entry in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointError(f"{shown} is not a readable PyTorch checkpoint (corrupt zip archive: {escape_text(str(error))})") from None
    if total > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(
            f"{shown} would unpack to {total:,} bytes, more than the {MAX_CHECKPOINT_BYTES:,} a checkpoint may hold; it was not loaded"
        )


def load_pickled_state_dict(data: bytes, source: Path) -> dict[str, torch.Tensor]:
    """A bare ``state_dict`` written by ``torch.save`` (the seed's ``mnist_VGG.pth``), unpickled with ``weights_only=True``.

    Raises:
        CheckpointError: Python objects weights-only loading refuses, a checkpoint of this project's old pickle
            format, or anything but a dict.
    """
    shown = display_name(source)
    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error) or "GLOBAL" in str(error):
            found = re.search(r"GLOBAL ([\w.]+)", str(error))
            culprit = f" ({found.group(1)})" if found else ""
            raise CheckpointError(
                f"{shown} is not a safe checkpoint: it holds Python objects{culprit} that weights-only loading refuses to run"
            ) from None
        raise unreadable(source) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, AttributeError) as error:
        raise unreadable(source, type(error).__name__) from None
    if isinstance(loaded, dict) and isinstance(loaded.get("format"), str) and loaded["format"] == CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{shown} was written by an older version of mnist-cnn (a torch pickle, checkpoint format 1), "
            "which this version no longer reads: train the model again"
        )
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{shown} is not an mnist-cnn checkpoint nor a model state_dict")
    return loaded  # a dict of tensors named by text: checked with the fields of any checkpoint
