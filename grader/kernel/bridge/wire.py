"""The wire format of the check protocol, shared by the grader and the kernel.

Values travel as JSON. JSON's own types stand for themselves; everything else is a one-key
object whose key is a tag: ``{"__tuple__": [...]}``, ``{"__dict__": {...}}``,
``{"__tensor__": "<base64 of torch.save>"}`` and ``{"__module__": {...}}`` (a module spec going
to the kernel, a module description coming back). Tensors are read back with
``torch.load(weights_only=True)`` only. torch is imported lazily: a kernel whose notebook never
imported it answers plain values without paying for the import.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Mapping
from typing import Any

MIME = "application/vnd.nncourse.grader+json"  # the display type a reply travels under
TUPLE, DICT, TENSOR, MODULE = "__tuple__", "__dict__", "__tensor__", "__module__"
MAX_DEPTH = 32


class WireError(ValueError):
    """Data that is not a value of the wire format."""


def tensor_to_b64(tensor: Any) -> str:
    """A tensor as base64 text of its ``torch.save`` bytes (detached, on the CPU, a compact
    copy rather than a view of a larger storage)."""
    import torch

    buf = io.BytesIO()
    torch.save(tensor.detach().cpu().clone(), buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def safe_load_b64(text: str) -> Any:
    """Read base64 ``torch.save`` bytes with the safe loader (``weights_only=True``): tensors,
    containers and plain values only; anything that would need unpickling code is refused."""
    import torch

    if not isinstance(text, str):
        raise WireError("expected base64 text")
    return torch.load(io.BytesIO(base64.b64decode(text)), weights_only=True)


def save_b64(value: Any) -> str:
    """Any value the safe loader reads back (a state_dict, a dict of tensors) as base64 text."""
    import torch

    buf = io.BytesIO()
    torch.save(value, buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")


# encode(value, special): special turns a value JSON cannot hold into wire data, or returns
# NotImplemented; each end brings its own (tensors and module specs from the grader, tensors,
# modules and numpy values from the kernel).
Special = Callable[[Any], Any]


def encode(value: Any, special: Special, depth: int = 0) -> Any:
    """``value`` as wire data. Raise WireError for what neither JSON nor ``special`` holds."""
    if depth > MAX_DEPTH:
        raise WireError("the value is nested too deeply")
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, tuple):
        return {TUPLE: [encode(v, special, depth + 1) for v in value]}
    if isinstance(value, list):
        return [encode(v, special, depth + 1) for v in value]
    if isinstance(value, dict):
        return {DICT: {str(k): encode(v, special, depth + 1) for k, v in value.items()}}
    data = special(value)
    if data is NotImplemented:
        raise WireError(f"cannot send a {type(value).__name__}")
    return data


def decode(data: Any, tags: Mapping[str, Callable[[Any], Any]], depth: int = 0) -> Any:
    """Wire data back into values: containers here, tagged leaves (tensors, modules) by
    ``tags``. Raise WireError for anything else; nothing is ever executed."""
    if depth > MAX_DEPTH:
        raise WireError("the value is nested too deeply")
    if data is None or isinstance(data, bool | int | float | str):
        return data
    if isinstance(data, list):
        return [decode(v, tags, depth + 1) for v in data]
    if isinstance(data, dict) and len(data) == 1:
        ((tag, inner),) = data.items()
        if tag == TUPLE and isinstance(inner, list):
            return tuple(decode(v, tags, depth + 1) for v in inner)
        if tag == DICT and isinstance(inner, dict):
            return {str(k): decode(v, tags, depth + 1) for k, v in inner.items()}
        if tag in tags:
            return tags[tag](inner)
    raise WireError("not a value of the wire format")
