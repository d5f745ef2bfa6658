"""The kernel's end of the check protocol.

The grader copies this package into the student's kernel (read-only, beside the course kit)
and, after the notebook ran, calls ``install(get_ipython(), layer_fields)``. That defines one
name in the notebook's namespace, ``__grader_bridge__``: given a request (JSON text), it builds
the arguments (tensors, module specs), calls the student's function (or a grader-written
function run with the student's names in scope), and displays the reply under the private MIME
type, tensors and modules encoded as data (``grader.kernel.bridge.wire``).

Everything here runs in untrusted territory: the student may have replaced any of it. That is
fine by design: the grader trusts nothing it receives beyond "this is data". The grader also
uses ``build_module`` itself, to check a spec before it sends it.
"""

from __future__ import annotations

import functools
import json
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from . import wire

Send = Callable[[dict[str, Any]], None]
LayerFields = Mapping[str, Sequence[str]]


@functools.cache
def probes() -> dict[str, type]:
    """Grader probes: ``Sleep(ms)`` sleeps, then returns its input; ``CallCounter`` counts its
    forward calls in the int64 buffer ``calls``."""
    import torch
    from torch import nn

    class Sleep(nn.Module):
        def __init__(self, ms: float = 1.0) -> None:
            super().__init__()
            self.ms = float(ms)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            time.sleep(self.ms / 1000.0)
            return x

    class CallCounter(nn.Module):
        calls: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return x

    return {"Sleep": Sleep, "CallCounter": CallCounter}


def build_module(spec: Mapping[str, Any]) -> Any:
    """The module a spec describes (``kind``: a ``torch.nn`` "layer", a "seq" of specs, a
    course-kit "kit" constructor, a "probe"), with its weights loaded and its mode set."""
    from torch import nn

    kind, name = spec["kind"], spec["name"]
    args = [from_wire(a) for a in spec.get("args", [])]
    kwargs = {k: from_wire(v) for k, v in spec.get("kwargs", {}).items()}
    if kind == "layer":
        layer = getattr(nn, name, None)
        if not (isinstance(layer, type) and issubclass(layer, nn.Module)):
            raise ValueError(f"torch.nn has no layer {name!r}")
        module = layer(*args, **kwargs)
    elif kind == "seq":
        module = nn.Sequential(*args)
    elif kind == "kit":
        import nncourse

        module = getattr(nncourse, name)(*args, **kwargs)
    elif kind == "probe":
        module = probes()[name](*args, **kwargs)
    else:
        raise ValueError(f"unknown module spec kind {kind!r}")
    if spec.get("state_dict") is not None:
        module.load_state_dict({k: _tensor(v) for k, v in spec["state_dict"].items()})
    module.train(bool(spec.get("training", False)))
    return module


def _tensor(text: str) -> Any:
    import torch

    value = wire.safe_load_b64(text)
    if not isinstance(value, torch.Tensor):
        raise wire.WireError("expected a tensor")
    return value


def from_wire(data: Any) -> Any:
    """Arguments from the grader: containers, tensors and module specs (built here)."""
    return wire.decode(data, {wire.TENSOR: _tensor, wire.MODULE: build_module})


def _plain(value: Any) -> Any:
    # a layer's constructor arguments as JSON data; anything exotic as its text
    if isinstance(value, list | tuple):
        return {wire.TUPLE: [_plain(v) for v in value]}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def describe_module(module: Any, layer_fields: LayerFields) -> dict[str, Any]:
    """A module as data: each named module (the root first, as "") with its type, the class's
    module, its constructor arguments from ``layer_fields`` and its training flag; and its
    state_dict as one ``torch.save`` blob (quantized modules keep tuples and dtypes there, and
    the module versions their layouts depend on)."""
    import torch

    layers = []
    for name, sub in module.named_modules():
        type_name = type(sub).__name__
        fields = layer_fields.get(type_name, ())
        config = {f: _plain(getattr(sub, f, None)) for f in fields if f != "bias"}
        if "bias" in fields:
            bias = getattr(sub, "bias", None)
            config["bias"] = (bias() if callable(bias) else bias) is not None
        layers.append({"name": name, "type": type_name, "module": type(sub).__module__,
                       "config": config, "training": bool(sub.training)})
    state = module.state_dict()
    plain_state = type(state)((k, v.detach().cpu() if isinstance(v, torch.Tensor) else v)
                              for k, v in state.items())
    plain_state._metadata = getattr(state, "_metadata", None)
    return {wire.MODULE: {"layers": layers, "state_dict": wire.save_b64(plain_state)}}


def to_wire(value: Any, layer_fields: LayerFields) -> Any:
    """A result for the grader: JSON values, tensors, modules, numpy scalars and arrays."""

    def special(v: Any) -> Any:
        torch = sys.modules.get("torch")  # only if the notebook imported it
        if torch is not None and isinstance(v, torch.Tensor):
            return {wire.TENSOR: wire.tensor_to_b64(v)}
        if torch is not None and isinstance(v, torch.nn.Module):
            return describe_module(v, layer_fields)
        if hasattr(v, "item") and getattr(v, "shape", None) == ():  # a numpy scalar
            return wire.encode(v.item(), special)
        if hasattr(v, "shape") and hasattr(v, "dtype") and hasattr(v, "tolist"):
            import torch as torch_  # a numpy array

            return {wire.TENSOR: wire.tensor_to_b64(torch_.as_tensor(v))}
        return NotImplemented

    return wire.encode(value, special)


def _failure(stage: str, exc: BaseException) -> dict[str, Any]:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    missing = getattr(exc, "name", None) if isinstance(exc, NameError) else None
    return {"ok": False, "stage": stage, "error": text[-2000:], "traceback": tb[-4000:],
            "ename": type(exc).__name__[:100], "message": str(exc)[:2000],
            "where": _notebook_function(exc), "missing": missing if isinstance(missing, str)
            else None}


def _notebook_function(exc: BaseException) -> str:
    """The innermost function of the notebook's own code the exception passed through (not the
    grader's code sent to the kernel, not this module, not a library), or ""."""
    here = __file__
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        name = frame.filename
        if name.startswith("<grader") or name == here or "site-packages" in name \
                or name.startswith(sys.prefix) or name.startswith(sys.base_prefix):
            continue
        return "" if frame.name == "<module>" else frame.name
    return ""


class Bridge:
    """``__grader_bridge__``: one request in (JSON text), one reply out through ``send``."""

    def __init__(self, namespace: dict[str, Any], layer_fields: LayerFields, send: Send) -> None:
        self._namespace = namespace
        self._layer_fields = layer_fields
        self._send = send

    def __call__(self, request_json: str) -> None:
        self._send(self.answer(json.loads(request_json)))

    def answer(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """The reply to one request: ``{"ok": True, "value": ..., "args_after": [...]}``, or
        ``{"ok": False, "stage": "arguments" | "call" | "reply", "error": ...}``."""
        try:
            args = [from_wire(a) for a in request["args"]]
            kwargs = {k: from_wire(v) for k, v in request["kwargs"].items()}
        except BaseException as exc:  # noqa: BLE001 - reported to the grader as data
            return _failure("arguments", exc)
        try:
            result = self._function(request)(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - the student's error, reported as text
            return _failure("call", exc)
        try:
            payload = {"ok": True, "value": to_wire(result, self._layer_fields)}
            if request.get("inspect"):
                payload["args_after"] = [to_wire(a, self._layer_fields) for a in args]
        except BaseException as exc:  # noqa: BLE001 - a result that is not data
            return _failure("reply", exc)
        return payload

    def _function(self, request: Mapping[str, Any]) -> Callable[..., Any]:
        name = str(request["name"])
        function: Any
        if request.get("source") is not None:
            # grader-written code, run with the student's names in scope
            scope = dict(self._namespace)
            exec(compile(request["source"], f"<grader: {name}>", "exec"), scope)
            function = scope[name]
        else:
            function = self._namespace.get(name)
        if not callable(function):
            raise NameError(f"name {name!r} is not defined in the notebook as a function",
                            name=name)
        return cast(Callable[..., Any], function)


def _display(payload: dict[str, Any]) -> None:
    from IPython.display import display

    display({wire.MIME: json.dumps(payload)}, raw=True)


def install(shell: Any, layer_fields: LayerFields, send: Send | None = None) -> None:
    """Define ``__grader_bridge__`` in ``shell``'s user namespace (an IPython shell, or any
    object with a ``user_ns`` dict); replies go to ``send`` (default: displayed under
    ``wire.MIME``, which is how they reach the grader)."""
    shell.user_ns["__grader_bridge__"] = Bridge(shell.user_ns, layer_fields, send or _display)
