"""Grader side of the check protocol: what crosses between a check and the student's kernel.

Arguments go to the kernel as JSON (tensors inside as ``torch.save`` bytes, modules as specs the
kernel builds). Results come back as JSON and are decoded as data only: tensors through
``torch.load(weights_only=True)``, modules as a ``ReturnedModule`` record. Nothing the kernel
sends is unpickled or executed. ``grader/kernel_bridge.py`` is the other half.
"""

from __future__ import annotations

import base64
import io
import json
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

MIME = "application/vnd.nncourse.grader+json"

# Layer types a ReturnedModule may be rebuilt from, with the constructor arguments the kernel
# reports for each (the bridge gets this table when it is sent; see bridge_source).
REBUILDABLE: dict[str, tuple[str, ...]] = {
    "Conv1d": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
               "groups", "bias", "padding_mode"),
    "Conv2d": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
               "groups", "bias", "padding_mode"),
    "Linear": ("in_features", "out_features", "bias"),
    "BatchNorm1d": ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    "BatchNorm2d": ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    "LayerNorm": ("normalized_shape", "eps", "elementwise_affine"),
    "MaxPool2d": ("kernel_size", "stride", "padding", "dilation"),
    "AvgPool2d": ("kernel_size", "stride", "padding"),
    "AdaptiveAvgPool2d": ("output_size",),
    "Flatten": ("start_dim", "end_dim"),
    "Dropout": ("p",),
    "ReLU": (),
    "ReLU6": (),
    "GELU": (),
    "Identity": (),
}


class StudentError(AssertionError):
    """The student's code raised, timed out, or sent something that is not valid data.

    An AssertionError so that pytest reports it as a failed check with this message.
    """


class ProtocolError(RuntimeError):
    """A grader-side mistake: a check sent a spec the kernel could not build."""


@dataclass(frozen=True)
class ModuleSpec:
    """A module the kernel builds from data: a torch.nn layer, a Sequential, a kit model or a
    probe (``Sleep``, ``CallCounter``), optionally with weights and a train/eval mode."""

    kind: str
    name: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    state_dict: Mapping[str, torch.Tensor] | None = None
    training: bool = False


def layer(name: str, *args: Any, state_dict: Mapping[str, torch.Tensor] | None = None,
          training: bool = False, **kwargs: Any) -> ModuleSpec:
    """``layer("Conv2d", 16, 32, 3, padding=1)`` is ``torch.nn.Conv2d(16, 32, 3, padding=1)``."""
    return ModuleSpec("layer", name, args, kwargs, state_dict=state_dict, training=training)


def seq(*children: ModuleSpec, state_dict: Mapping[str, torch.Tensor] | None = None,
        training: bool = False) -> ModuleSpec:
    """An ``nn.Sequential`` of the given specs."""
    return ModuleSpec("seq", "Sequential", children, state_dict=state_dict, training=training)


def kit_model(
    name: str, *args: Any, state_dict: Mapping[str, torch.Tensor] | None = None,
    training: bool = False, **kwargs: Any,
) -> ModuleSpec:
    """A course-kit constructor, e.g. ``kit_model("make_cnn", channels=(32, 64, 128))``."""
    return ModuleSpec("kit", name, args, kwargs, state_dict=state_dict, training=training)


def probe(name: str, **kwargs: Any) -> ModuleSpec:
    """A grader probe: ``Sleep(ms)`` sleeps then returns its input; ``CallCounter`` counts
    forward calls in its int64 buffer ``calls``."""
    return ModuleSpec("probe", name, (), kwargs)


@dataclass(frozen=True)
class LayerInfo:
    name: str
    type: str  # the class name, e.g. "Conv2d"
    config: Mapping[str, Any]
    module: str = ""  # the class's module, e.g. "torch.ao.nn.quantized.modules.conv"


@dataclass(frozen=True)
class ReturnedModule:
    """A module as the kernel described it: layers (``named_modules`` order, the root first
    under the name ""), weights and buffers, and each module's training flag."""

    layers: tuple[LayerInfo, ...]
    state_dict: Mapping[str, Any]  # tensors; quantized modules also keep tuples and dtypes
    training: Mapping[str, bool]

    def leaves(self) -> tuple[LayerInfo, ...]:
        """Layers that have no children (the ones that compute)."""
        names = [info.name for info in self.layers]
        return tuple(
            info for info in self.layers
            if info.name and not any(n.startswith(info.name + ".") for n in names)
        )

    def rebuild(self) -> nn.Module:
        """A real module built in the grader from the allowed layer types, weights loaded.

        Only nested ``nn.Sequential`` containers of allowed layers are rebuilt; anything else
        raises StudentError, since the grader will not run code it did not write.
        """
        by_name = {info.name: info for info in self.layers}

        def build(name: str) -> nn.Module:
            info = by_name[name]
            prefix = f"{name}." if name else ""
            children = [n for n in by_name if n.startswith(prefix) and n != name
                        and "." not in n[len(prefix):]]
            if info.type == "Sequential":
                return nn.Sequential(OrderedDict(
                    (child[len(prefix):], build(child)) for child in children))
            if info.type not in REBUILDABLE or children or \
                    not info.module.startswith("torch.nn.modules"):
                raise StudentError(f"cannot rebuild a module of type {info.type!r} "
                                   f"(at {name or 'the root'}); use standard torch.nn layers")
            kwargs = {k: info.config[k] for k in REBUILDABLE[info.type] if k in info.config}
            return getattr(nn, info.type)(**kwargs)

        module = build("")
        try:
            module.load_state_dict(dict(self.state_dict))
        except RuntimeError as exc:
            raise StudentError(f"returned weights do not fit the returned layers: {exc}") from exc
        for name, sub in module.named_modules():
            sub.train(self.training.get(name, False))
        return module


def bridge_source() -> str:
    """The kernel half of the protocol (kernel_bridge.py), with the layer table filled in."""
    text = Path(__file__).with_name("kernel_bridge.py").read_text(encoding="utf-8")
    placeholder = 'LAYER_FIELDS_JSON = "{}"'
    assert placeholder in text
    return text.replace(placeholder, f"LAYER_FIELDS_JSON = {json.dumps(REBUILDABLE)!r}")


def encode(value: Any) -> Any:
    """Turn a check's argument into JSON-able data for the kernel bridge."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, torch.Tensor):
        return {"__tensor__": _tensor_to_b64(value)}
    if isinstance(value, ModuleSpec):
        return {"__module__": {
            "kind": value.kind, "name": value.name,
            "args": [encode(a) for a in value.args],
            "kwargs": {k: encode(v) for k, v in value.kwargs.items()},
            "state_dict": None if value.state_dict is None
            else {k: _tensor_to_b64(v) for k, v in value.state_dict.items()},
            "training": value.training,
        }}
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, Mapping):
        return {"__dict__": {str(k): encode(v) for k, v in value.items()}}
    raise ProtocolError(f"cannot send a {type(value).__name__} to the kernel")


def decode(data: Any, depth: int = 0) -> Any:
    """Turn the kernel's JSON back into values. Only data: anything unexpected is a
    StudentError, never executed."""
    if depth > 32:
        raise StudentError("the returned value is nested too deeply")
    if data is None or isinstance(data, bool | int | float | str):
        return data
    if isinstance(data, list):
        return [decode(v, depth + 1) for v in data]
    if isinstance(data, dict) and len(data) == 1:
        ((tag, inner),) = data.items()
        if tag == "__tuple__" and isinstance(inner, list):
            return tuple(decode(v, depth + 1) for v in inner)
        if tag == "__dict__" and isinstance(inner, dict):
            return {str(k): decode(v, depth + 1) for k, v in inner.items()}
        if tag == "__tensor__" and isinstance(inner, str):
            return _tensor_from_b64(inner)
        if tag == "__module__" and isinstance(inner, dict):
            return _decode_module(inner)
    raise StudentError("the kernel sent back something that is not a value the grader reads")


def _decode_module(data: dict[str, Any]) -> ReturnedModule:
    try:
        layers = tuple(
            LayerInfo(str(item["name"]), str(item["type"]),
                      {str(k): decode(v) for k, v in dict(item["config"]).items()},
                      str(item.get("module", "")))
            for item in data["layers"]
        )
        training = {str(item["name"]): bool(item["training"]) for item in data["layers"]}
        state = _state_from_b64(data["state_dict"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StudentError(f"malformed module description from the kernel: {exc}") from exc
    return ReturnedModule(layers, state, training)


_QUANTIZED_LOAD_WARNINGS = ("TypedStorage is deprecated", r"torch\.quantize_per_tensor")


def _state_from_b64(text: str) -> dict[str, Any]:
    """A state_dict sent as one torch.save blob, read with the safe loader only. Values are
    tensors (quantized ones included) or the plain data quantized modules keep (tuples,
    dtypes, numbers)."""
    if not isinstance(text, str):
        raise StudentError("a returned state_dict was not encoded as expected")
    try:
        with warnings.catch_warnings():
            # reading quantized tensors warns about deprecated storage and quantized-tensor APIs
            for message in _QUANTIZED_LOAD_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            state = torch.load(io.BytesIO(base64.b64decode(text)), weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure of the safe loader is the student's
        raise StudentError(f"a returned state_dict could not be read safely: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise StudentError("a returned state_dict was not a dict with string keys")
    return state


def _tensor_to_b64(t: torch.Tensor) -> str:
    buf = io.BytesIO()
    torch.save(t.detach().cpu().clone(), buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _tensor_from_b64(text: str) -> torch.Tensor:
    try:
        value = torch.load(io.BytesIO(base64.b64decode(text)), weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure of the safe loader is the student's
        raise StudentError(f"a returned tensor could not be read safely: {exc}") from exc
    if not isinstance(value, torch.Tensor):
        raise StudentError("a returned tensor was not a tensor")
    return value


# A transport sends one request and returns the decoded JSON payload of the bridge's reply.
Transport = Callable[[str, float], dict[str, Any]]


class Student:
    """What the ``student`` fixture gives a check: calls into the student's live kernel."""

    def __init__(self, transport: Transport, call_timeout: float, judge: Any = None) -> None:
        self._transport = transport
        self.call_timeout = call_timeout
        self._judge = judge  # grader.judge.Judge over the kernel's working folder, if any

    def with_timeout(self, seconds: float) -> Student:
        """The same kernel with another per-call limit (a check whose call trains a model)."""
        return Student(self._transport, seconds, self._judge)

    def files(self) -> dict[str, int]:
        """Files the notebook wrote in its working folder: relative path -> size in bytes."""
        return self._need_judge().files()

    def judge(self, source: str, inputs: Mapping[str, Any], timeout: float = 120.0) -> Any:
        """Load and run files the notebook wrote (an exported program, an ONNX model) with
        grader-written ``def judge(folder, inputs)`` in a sandboxed process that holds no
        secrets; return its result as data. See grader/judge.py."""
        return self._need_judge().run(source, inputs, timeout)

    def _need_judge(self) -> Any:
        if self._judge is None:
            raise ProtocolError("this check needs the kernel's files, which are not available")
        return self._judge

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the student's function ``name`` and return its result, decoded as data."""
        return self._request({"name": name}, args, kwargs)["value"]

    def call_inspect(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, list[Any]]:
        """Like ``call``, and also return the positional arguments as they are after the call."""
        payload = self._request({"name": name, "inspect": True}, args, kwargs)
        return payload["value"], payload["args_after"]

    def drive(self, source: str, *args: Any, **kwargs: Any) -> Any:
        """Run grader-written ``def drive(...)`` from ``source`` in the kernel, with the student's
        names in scope, and return its result."""
        return self._request({"name": "drive", "source": source}, args, kwargs)["value"]

    def _request(self, head: dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
                 ) -> dict[str, Any]:
        request = {**head, "args": [encode(a) for a in args],
                   "kwargs": {k: encode(v) for k, v in kwargs.items()}}
        reply = self._transport(json.dumps(request), self.call_timeout)
        if reply.get("grader_error"):
            raise ProtocolError(f"the kernel could not build the arguments: {reply.get('error')}")
        if not reply.get("ok"):
            error = str(reply.get("error", "unknown error"))[:2000]
            raise StudentError(f"{head['name']} raised {error}")
        try:
            return {"value": decode(reply.get("value")),
                    "args_after": [decode(a) for a in reply.get("args_after", [])]}
        except RecursionError as exc:
            raise StudentError("the returned value is nested too deeply") from exc
