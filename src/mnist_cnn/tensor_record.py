"""A nested record of plain values and tensors as one safetensors file: no pickle, nothing to run when it is read.

The file is a plain `safetensors <https://github.com/huggingface/safetensors>`_ file. Its tensors are every tensor in
the record, named by the dotted path to it (``state_dict.conv_block_1.0.weight``,
``training_state.optimizer.state.0.momentum_buffer``; ``#2``, ``#3``... is added should two paths read the same).
Its ``__metadata__`` holds one entry, :data:`RECORD_KEY`, whose value is the rest of the record as JSON text, in
which:

- a tensor is ``{"$tensor": "<its name in the file>"}``;
- a tuple is ``{"$tuple": [items...]}`` (Adam's ``betas``);
- a dict whose keys are not all text, or one of whose keys starts with ``$``, is ``{"$dict": [[key, value], ...]}``
  (an optimizer's ``state`` is keyed by parameter numbers: ``{0: {...}}``);
- a NaN or infinite float is ``{"$float": "nan"}``, ``"inf"`` or ``"-inf"`` (JSON has no such numbers);
- ``None``, booleans, whole numbers, other floats, text, lists and other dicts are themselves.

Reading it back gives the same values, types included (an ``int`` key stays an ``int``, a tuple a tuple).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, BinaryIO

import torch
from safetensors.torch import save

#: The ``__metadata__`` entry that holds the record as JSON text.
RECORD_KEY = "record"
#: Bytes of the little-endian length that opens every safetensors file.
LENGTH_BYTES = 8
#: The deepest a record may nest, in JSON levels (a checkpoint's deepest value, an optimizer's moment, is at 7).
MAX_DEPTH = 32

_TENSOR, _TUPLE, _DICT, _FLOAT = "$tensor", "$tuple", "$dict", "$float"
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def to_bytes(record: dict[str, Any]) -> bytes:
    """The record as the bytes of a safetensors file (see the module's description).

    Raises:
        TypeError: The record holds something other than the values listed above (a programming error).
    """
    tensors: dict[str, torch.Tensor] = {}
    storages: set[int] = set()

    def tensor_ref(value: torch.Tensor, path: tuple[str, ...]) -> dict[str, str]:
        tensor = value.detach().cpu().contiguous()
        if tensor.numel() and tensor.untyped_storage().data_ptr() in storages:
            tensor = tensor.clone()  # safetensors refuses two tensors that share memory
        storages.add(tensor.untyped_storage().data_ptr())
        # safetensors names are UTF-8: a key that is not (a lone surrogate) is written with a backslash escape
        base = ".".join(path).encode("utf-8", "backslashreplace").decode("utf-8") or "tensor"
        name, copy = base, 1
        while name in tensors or name == "__metadata__":
            copy += 1
            name = f"{base}#{copy}"
        tensors[name] = tensor
        return {_TENSOR: name}

    def encode(value: Any, path: tuple[str, ...]) -> Any:
        if isinstance(value, torch.Tensor):
            return tensor_ref(value, path)
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return float(value) if math.isfinite(value) else {_FLOAT: repr(float(value))}
        if isinstance(value, (list, tuple)):
            items = [encode(item, (*path, str(index))) for index, item in enumerate(value)]
            return {_TUPLE: items} if isinstance(value, tuple) else items
        if isinstance(value, dict):
            if all(isinstance(key, str) and not key.startswith("$") for key in value):
                return {key: encode(item, (*path, key)) for key, item in value.items()}
            return {_DICT: [[encode(key, path), encode(item, (*path, str(key)))] for key, item in value.items()]}
        raise TypeError(f"a record cannot hold a {type(value).__name__} (at {'.'.join(path) or 'its root'})")

    text = json.dumps(encode(record, ()), allow_nan=False, separators=(",", ":"))
    return save(tensors, metadata={RECORD_KEY: text})


def read_header(handle: BinaryIO, size: int, max_bytes: int) -> dict[str, Any]:
    """The parsed JSON header of a safetensors file (its tensor table and ``__metadata__``), reading nothing else.

    Args:
        handle: The file, at its start.
        size: The file's size in bytes.
        max_bytes: The longest header accepted.

    Raises:
        ValueError: Truncated, a header longer than ``max_bytes`` or than the file, or not a JSON object
            (``json.JSONDecodeError`` and ``UnicodeDecodeError`` are ``ValueError`` too).
    """
    if size < LENGTH_BYTES:
        raise ValueError("shorter than a safetensors header")
    length = int.from_bytes(handle.read(LENGTH_BYTES), "little")
    if length > max_bytes:
        raise ValueError(f"its header claims {length:,} bytes, more than the {max_bytes:,} allowed")
    if LENGTH_BYTES + length > size:
        raise ValueError(f"truncated: its header claims {length:,} bytes, the file holds {size - LENGTH_BYTES:,}")
    try:
        header = json.loads(handle.read(length).decode("utf-8"))
    except RecursionError:
        raise ValueError("its header nests too deeply to read") from None
    if not isinstance(header, dict):
        raise ValueError("its header is not a JSON object")
    return header


def skeleton_of(header: dict[str, Any]) -> Any:
    """The record's JSON (tensors still as references) from a header :func:`read_header` returned.

    Raises:
        ValueError: No record in the metadata, or one that is not JSON.
    """
    metadata = header.get("__metadata__")
    text = metadata.get(RECORD_KEY) if isinstance(metadata, dict) else None
    if not isinstance(text, str):
        raise ValueError(f"its metadata holds no {RECORD_KEY!r}")
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("its record nests too deeply to read") from None


def decode(skeleton: Any, tensors: Mapping[str, torch.Tensor] | None) -> Any:
    """The record's values from its JSON and its tensors, checking every reference and tag.

    Args:
        skeleton: From :func:`skeleton_of`.
        tensors: The file's tensors by name; ``None`` to read the record alone (each tensor then reads ``None``).

    Raises:
        ValueError: An unknown tag, a reference to a tensor the file lacks, a tensor no reference names, or nesting
            deeper than :data:`MAX_DEPTH`.
    """
    used: set[str] = set()

    def walk(value: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise ValueError(f"its record nests deeper than {MAX_DEPTH} levels")
        if isinstance(value, list):
            return [walk(item, depth + 1) for item in value]
        if not isinstance(value, dict):
            return value
        if not any(key.startswith("$") for key in value):
            return {key: walk(item, depth + 1) for key, item in value.items()}
        (tag, content), *rest = value.items()
        if rest or tag not in (_TENSOR, _TUPLE, _DICT, _FLOAT):
            raise ValueError(f"its record holds an unknown tag among {sorted(value)[:3]}")
        if tag == _TENSOR:
            if tensors is None:
                return None
            if not isinstance(content, str) or content not in tensors:
                raise ValueError(f"its record names a tensor the file lacks ({str(content)[:60]!r})")
            used.add(content)
            return tensors[content]
        if tag == _FLOAT:
            if content not in _NON_FINITE:
                raise ValueError(f"its record holds {str(content)[:20]!r} where 'nan', 'inf' or '-inf' belongs")
            return _NON_FINITE[content]
        items = walk(content, depth) if isinstance(content, list) else None
        if tag == _TUPLE and items is not None:
            return tuple(items)
        if tag == _DICT and items is not None and all(isinstance(pair, list) and len(pair) == 2 for pair in items):
            try:
                return dict(items)
            except TypeError:  # a key that cannot be a key (a list)
                raise ValueError("its record holds a dict keyed by lists") from None
        raise ValueError(f"its record holds a malformed {tag}")

    values = walk(skeleton, 0)
    unnamed = sorted(set(tensors or ()) - used)
    if unnamed:
        raise ValueError(f"it holds {len(unnamed)} tensor(s) its record does not name, such as {unnamed[0][:60]!r}")
    return values
