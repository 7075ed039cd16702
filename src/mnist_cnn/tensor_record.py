"""A nested record of plain values and tensors as one safetensors file: no pickle, nothing to run when it is read.

The file's tensors are every tensor in the record, named by the dotted path to it (``state_dict.conv_block_1.0.weight``,
``training_state.optimizer.state.0.momentum_buffer``; ``#2``, ``#3``... added should two paths read the same). Its ``__metadata__`` entry
:data:`RECORD_KEY` holds the rest as JSON text, in which a tensor is ``{"$tensor": "<its name>"}``, a tuple ``{"$tuple": [items...]}``
(Adam's ``betas``), a dict whose keys are not all text or one of whose keys starts with ``$`` is ``{"$dict": [[key, value], ...]}`` (an
optimizer's ``state`` is keyed by parameter numbers), and a NaN or infinite float ``{"$float": "nan"}`` (``"inf"``, ``"-inf"``); ``None``,
booleans, numbers, text, lists and other dicts are themselves. Reading it back gives the same values, types included.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import torch
from safetensors.torch import save

RECORD_KEY = "record"

_TENSOR, _TUPLE, _DICT, _FLOAT = "$tensor", "$tuple", "$dict", "$float"
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def to_bytes(record: dict[str, Any]) -> bytes:
    """The record as the bytes of a safetensors file; a value of a kind not listed above raises TypeError (a programming error)."""
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


def decode(metadata: Any, tensors: Mapping[str, torch.Tensor] | None) -> Any:
    """The record from a safetensors file's ``__metadata__`` and tensors, checking every tag and reference.

    Args:
        tensors: The file's tensors by name; ``None`` to read the record alone (each tensor then reads ``None``).

    Raises:
        ValueError: No record, one that is not JSON or nests too deeply, an unknown or malformed tag, a reference to a
            tensor the file lacks, or a tensor no reference names.
    """
    text = metadata.get(RECORD_KEY) if isinstance(metadata, dict) else None
    if not isinstance(text, str):
        raise ValueError(f"its metadata holds no {RECORD_KEY!r}")
    used: set[str] = set()

    def tagged(value: dict[str, Any]) -> Any:  # called on every JSON object, innermost first
        if not any(key.startswith("$") for key in value):
            return value
        (tag, content), *rest = value.items()
        if rest or tag not in (_TENSOR, _TUPLE, _DICT, _FLOAT):
            raise ValueError(f"its record holds an unknown tag among {sorted(value)[:3]}")
        if tag == _TENSOR and tensors is None:
            return None
        if tag == _TENSOR:
            if not isinstance(content, str) or content not in tensors:
                raise ValueError(f"its record names a tensor the file lacks ({str(content)[:60]!r})")
            used.add(content)
            return tensors[content]
        if tag == _FLOAT:
            if not isinstance(content, str) or content not in _NON_FINITE:
                raise ValueError(f"its record holds {str(content)[:20]!r} where 'nan', 'inf' or '-inf' belongs")
            return _NON_FINITE[content]
        if tag == _TUPLE and isinstance(content, list):
            return tuple(content)
        if tag == _DICT and isinstance(content, list) and all(isinstance(pair, list) and len(pair) == 2 for pair in content):
            try:
                return dict(content)
            except TypeError:  # a key that cannot be a key (a list)
                raise ValueError("its record holds a dict keyed by lists") from None
        raise ValueError(f"its record holds a malformed {tag}")

    try:
        values = json.loads(text, object_hook=tagged)
    except RecursionError:
        raise ValueError("its record nests too deeply to read") from None
    unnamed = sorted(set(tensors or ()) - used)
    if unnamed:
        raise ValueError(f"it holds {len(unnamed)} tensor(s) its record does not name, such as {unnamed[0][:60]!r}")
    return values
