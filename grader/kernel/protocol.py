"""The grader's end of the check protocol: what a check sends to the student's kernel and how
what comes back is read.

Arguments go to the kernel as wire data (``grader.kernel.bridge.wire``): tensors as ``torch.save``
bytes, modules as specs the kernel builds (``ModuleSpec``; each spec is built once here first,
so a bad spec is the grader's error, never the student's). Results come back as wire data and
are decoded as data only: tensors through ``torch.load(weights_only=True)``, modules as a
``ReturnedModule`` record. Nothing the kernel sends is unpickled or executed.
``grader.kernel.bridge.kernel_end`` is the other end.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
import shutil
import textwrap
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from torch import nn

from grader.errors import ChecksTimeout, ProtocolError, StudentError, StudentRaised
from grader.kernel.bridge import kernel_end, wire
from grader.text import (
    LOG_CHARS,
    NAME_CHARS,
    QUOTE_CHARS,
    clip,
    clip_end,
    one_line,
    text_block,
)

ANSWERS = ".grader"  # the folder of ``Student.answering``, in the kernel's working folder
_ASK_NAME = re.compile(r"[\w.-]{1,64}")

# Layer types a ReturnedModule may be rebuilt from, with the constructor arguments the kernel
# reports for each (the kernel's end gets this table when it is installed).
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


@dataclass(frozen=True)
class ModuleSpec:
    """A module the kernel builds from data: a torch.nn layer, a Sequential, a kit model or a
    probe (``Sleep``, ``CallCounter``), optionally with weights and a train/eval mode. Made with
    ``grader.checks.layer``, ``seq``, ``kit_model`` and ``probe``."""

    kind: str
    name: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    state_dict: Mapping[str, torch.Tensor] | None = None
    training: bool = False


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
            layer: nn.Module = getattr(nn, info.type)(**kwargs)
            return layer

        # built without memory (the meta device), then given the returned tensors themselves:
        # layers whose declared sizes the returned weights do not hold are refused, never
        # allocated in the grader's process, however large the student made them
        with torch.device("meta"):
            module = build("")
            twin = build("")  # stays on the meta device: each new input shape is tried there
        try:
            state = {k: v.clone() if isinstance(v, torch.Tensor) else v  # the record stays as sent
                     for k, v in self.state_dict.items()}
            module.load_state_dict(state, assign=True)
        except RuntimeError as exc:
            raise StudentError(f"returned weights do not fit the returned layers: "
                               f"{one_line(str(exc), QUOTE_CHARS)}") from exc
        if any(t.is_meta for t in (*module.parameters(), *module.buffers())):
            raise StudentError("the returned layers hold tensors that were not returned")
        for name, sub in module.named_modules():
            sub.train(self.training.get(name, False))
        module.register_forward_pre_hook(_Bounded(twin))
        return module


# What one forward of a rebuilt module may cost in the grader's process: each layer's output
# (2^26 floats: 256 MB) and the whole forward's work (FLOPs, as PyTorch counts them: about
# ten seconds on one thread). The student's layers choose both (a padding of 10^4, a channel
# count), so an input is first run on the meta device, where nothing is allocated or computed.
MAX_OUTPUT_ELEMENTS = 2**26
MAX_FORWARD_FLOPS = 2 * 10**10


class _Bounded:
    """A forward pre-hook of a rebuilt module: before the first forward on an input of a new
    shape, the same layers run on the meta device; a layer whose output, or a forward whose
    work, would pass the bounds is the student's failure, before anything is computed."""

    def __init__(self, twin: nn.Module) -> None:
        self._twin = twin
        self._tried: set[tuple[tuple[int, ...], ...]] = set()

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        shapes = tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor))
        if shapes in self._tried:
            return
        from torch.utils.flop_counter import FlopCounterMode

        for real, meta in zip(module.modules(), self._twin.modules(), strict=True):
            meta.train(real.training)
        largest = [0]

        def measure(_: nn.Module, __: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor):
                largest[0] = max(largest[0], out.numel())

        def trial() -> int:
            counter = FlopCounterMode(display=False)
            with torch.no_grad(), counter:
                self._twin(*(a.to("meta") if isinstance(a, torch.Tensor) else a
                             for a in args))
            return int(counter.get_total_flops())

        hooks = [m.register_forward_hook(measure) for m in self._twin.modules()]
        try:
            # on a thread of its own: a check's FlopCounterMode (or any dispatch mode, which is
            # per thread) around the real forward must not count the trial's operations too
            with ThreadPoolExecutor(max_workers=1) as one:
                flops = one.submit(trial).result()
        except (RuntimeError, ValueError, TypeError, IndexError):
            return  # the layers do not fit this input: the real forward says how
        finally:
            for hook in hooks:
                hook.remove()
        if largest[0] > MAX_OUTPUT_ELEMENTS:
            raise StudentError(f"the returned layers would make an output of {largest[0]:,} "
                               f"values from an input of shape {shapes[0] if shapes else ()} "
                               f"(the grader runs at most {MAX_OUTPUT_ELEMENTS:,})")
        if flops > MAX_FORWARD_FLOPS:
            raise StudentError(f"the returned layers would take {flops:.3g} "
                               f"FLOPs on an input of shape {shapes[0] if shapes else ()} "
                               f"(the grader runs at most {MAX_FORWARD_FLOPS:.0g})")
        self._tried.add(shapes)


def short_repr(value: Any) -> str:
    """An argument as a failure message shows it: a tensor by its shape, a module spec by its
    class, anything else by a short repr."""
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)}"
    if isinstance(value, ModuleSpec):
        return f"nn.{value.name}(...)" if value.kind == "layer" else f"a {value.name} model"
    return clip(repr(value), 60)


def call_text(function: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    """``function(arg, ..., key=value)`` as a failure message shows a call."""
    shown = [*map(short_repr, args), *(f"{k}={short_repr(v)}" for k, v in kwargs.items())]
    return f"{function}({', '.join(shown)})"


def _spec_to_wire(spec: ModuleSpec) -> dict[str, Any]:
    data = {
        "kind": spec.kind, "name": spec.name,
        "args": [encode(a) for a in spec.args],
        "kwargs": {k: encode(v) for k, v in spec.kwargs.items()},
        "state_dict": None if spec.state_dict is None
        else {k: wire.tensor_to_b64(v) for k, v in spec.state_dict.items()},
        "training": spec.training,
    }
    try:
        kernel_end.build_module(data)  # the same code the kernel runs: a bad spec stops here
    except Exception as exc:
        raise ProtocolError(f"the module spec {spec.kind} {spec.name!r} does not build: "
                            f"{type(exc).__name__}: {exc}") from exc
    return {wire.MODULE: data}


def _special(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return {wire.TENSOR: wire.tensor_to_b64(value)}
    if isinstance(value, ModuleSpec):
        return _spec_to_wire(value)
    return NotImplemented


def encode(value: Any) -> Any:
    """A check's argument as wire data for the kernel; ProtocolError if it cannot be sent."""
    try:
        return wire.encode(value, _special)
    except wire.WireError as exc:
        raise ProtocolError(f"{exc} to the kernel") from None


def decode(data: Any) -> Any:
    """The kernel's wire data back into values. Only data: anything unexpected is a
    StudentError, never executed."""
    try:
        return wire.decode(data, {wire.TENSOR: _tensor_from_b64, wire.MODULE: _decode_module})
    except wire.WireError as exc:
        raise StudentError(f"the kernel sent back something that is not a value the grader "
                           f"reads ({exc})") from None
    except RecursionError:
        raise StudentError("the returned value is nested too deeply") from None


def _decode_module(data: Any) -> ReturnedModule:
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


def _state_from_b64(text: Any) -> dict[str, Any]:
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
            state = wire.safe_load_b64(text)
    except Exception as exc:
        raise StudentError(f"a returned state_dict could not be read safely: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise StudentError("a returned state_dict was not a dict with string keys")
    return state


def _tensor_from_b64(text: Any) -> torch.Tensor:
    try:
        value = wire.safe_load_b64(text)
    except Exception as exc:
        raise StudentError(f"a returned tensor could not be read safely: {exc}") from exc
    if not isinstance(value, torch.Tensor):
        raise StudentError("a returned tensor was not a tensor")
    return value


T = TypeVar("T")


class Judge(Protocol):
    """What opens the files a notebook wrote (``grader.kernel.judge.Judge``)."""

    timeout_s: float  # a judge's time, unless a check says otherwise
    workdir: Path  # the kernel's working folder, as the grader sees it

    def files(self) -> dict[str, int]: ...

    def run(self, source: str, inputs: Mapping[str, Any], timeout: float, name: str) -> Any: ...


# A transport sends one request (JSON text) within a time limit (seconds) and returns the
# decoded JSON reply of the kernel's end; it raises StudentError when the kernel is gone.
Transport = Callable[[str, float], dict[str, Any]]


class Budget:
    """The time left to one submission's check stage (seconds of wall time), shared by every
    handle on its kernel. ``expired`` is set once a call found it used up."""

    def __init__(self, seconds: float | None) -> None:
        self.limit = seconds
        self.deadline = None if not seconds else time.monotonic() + seconds
        self.expired = False

    def used_up(self) -> bool:
        """Whether the time is up (and, if so, mark it ``expired``)."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.expired = True
        return self.expired

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Stop the clock while the grader computes for itself (a challenge's reference run,
        once per process): that time is not the submission's."""
        start = time.monotonic()
        try:
            yield
        finally:
            if self.deadline is not None:
                self.deadline += time.monotonic() - start

    def remaining(self) -> float:
        """Seconds left; raise ChecksTimeout when none are."""
        if self.deadline is None:
            return float("inf")
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.expired = True
            raise ChecksTimeout(f"not run: the checks of this submission ran out of time "
                                f"({self.limit:g} s for all of them)")
        return left


def source_of(function: Callable[..., Any]) -> tuple[str, str]:
    """The name and dedented source of a grader-written module-level function, to run it in
    the kernel or the judge (``ProtocolError`` for anything else: a lambda, a method, text)."""
    if not inspect.isfunction(function) or function.__name__ == "<lambda>":
        raise ProtocolError(f"expected a module-level function, got a "
                            f"{type(function).__name__}")
    return function.__name__, textwrap.dedent(inspect.getsource(function))


def judge_source_of(program: Callable[..., Any] | str) -> tuple[str, str]:
    """What ``Student.judge`` runs: a module-level function like ``drive``'s, or the text of a
    whole program (helpers and all) that defines ``judge(folder, inputs)``: the judge is a
    fresh process of its own, and a program that loads several file formats needs helpers."""
    if isinstance(program, str):
        return "judge", program
    return source_of(program)


@dataclass
class Answers:
    """How many answers the kernel (or a judge) has given the checks so far, and from what: a
    check that breaks on what came back is the student's failure, not the grader's."""

    count: int = 0
    last: str = ""

    def came(self, what: str) -> None:
        self.count += 1
        self.last = what


class Student:
    """What the ``student`` fixture gives a check: calls into the student's live kernel."""

    def __init__(self, transport: Transport, call_timeout: float, judge: Judge | None = None,
                 budget: Budget | None = None, answers: Answers | None = None,
                 memory_mb: int = 0) -> None:
        self._transport = transport
        self.call_timeout = call_timeout
        self._judge = judge  # over the kernel's working folder, if any
        self.budget = budget or Budget(None)
        self.answers = answers or Answers()
        self.memory_mb = memory_mb  # the kernel's limit, named when the student's code hits it

    def with_timeout(self, seconds: float) -> Student:
        """The same kernel with another per-call limit (a check whose call trains a model)."""
        return Student(self._transport, seconds, self._judge, self.budget, self.answers,
                       self.memory_mb)

    def files(self) -> dict[str, int]:
        """Files the notebook wrote in its working folder: relative path -> size in bytes."""
        return self._need_judge().files()

    def judge(self, function: Callable[..., Any] | str, inputs: Mapping[str, Any],
              timeout: float | None = None) -> Any:
        """Load and run files the notebook wrote (an exported program, an ONNX model) with the
        grader-written ``function(folder, inputs)`` in a sandboxed process that holds no
        secrets, within ``timeout`` seconds (default: the course's ``judge_timeout_s``); return
        its result as data. ``function`` may also be the text of a whole
        program defining ``judge(folder, inputs)`` (judge_source_of). See grader/kernel/judge.py."""
        name, source = judge_source_of(function)
        judge = self._need_judge()
        value = self._bounded(name, judge.timeout_s if timeout is None else timeout,
                              lambda seconds: judge.run(source, inputs, seconds, name))
        self.answers.came("the files the notebook wrote")
        return value

    @contextlib.contextmanager
    def answering(self, respond: Callable[[str], str | None]) -> Iterator[None]:
        """While the block runs, answer the kernel's questions one at a time: code the check
        runs in the kernel writes an empty file ``.grader/ask/NAME`` in its working folder and
        waits for ``.grader/answer/NAME``, which the grader writes with ``respond(NAME)`` (None:
        no answer). A check reveals a value only when the student's code reaches it (the next
        tick of a clock the grader controls), so nothing it sent beforehand answers the check.
        NAME: at most 64 letters, digits, ``-``, ``_`` or ``.``."""
        base = self._need_judge().workdir / ANSWERS
        ask, answer = base / "ask", base / "answer"
        shutil.rmtree(base, ignore_errors=True)
        answer.mkdir(parents=True)
        ask.mkdir()
        ask.chmod(0o777)  # the kernel's user (nobody, under root) asks; only the grader answers
        base.chmod(0o755)
        stop = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            answered: set[str] = set()
            try:
                while not stop.is_set():
                    for name in sorted(os.listdir(ask)):
                        if name in answered or not _ASK_NAME.fullmatch(name):
                            continue
                        answered.add(name)
                        value = respond(name)
                        if value is not None:
                            draft = answer / f".{name}.draft"
                            draft.write_text(value, encoding="utf-8")
                            draft.replace(answer / name)
                    stop.wait(0.0005)
            except BaseException as exc:  # noqa: BLE001 - raised in the check below
                failure.append(exc)

        server = threading.Thread(target=serve, daemon=True, name="grader-answers")
        server.start()
        try:
            yield
        finally:
            stop.set()
            server.join()
            shutil.rmtree(base, ignore_errors=True)
        if failure:
            raise failure[0]

    def _need_judge(self) -> Judge:
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

    def drive(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run the grader-written module-level ``function`` in the kernel, with the student's
        names in scope (its source is sent; it may use only what it imports and the notebook's
        names), and return its result, decoded as data."""
        name, source = source_of(function)
        return self._request({"name": name, "source": source}, args, kwargs)["value"]

    def _raised(self, head: Mapping[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                reply: Mapping[str, Any]) -> StudentRaised:
        """What the student reads when their code raised: the function and the call (a check's
        own code sent to the kernel is never named), or that a name is not defined."""
        said = str(reply.get("error", ""))  # "Class: message", as an older kernel's end sends it
        ename = one_line(str(reply.get("ename") or said.partition(":")[0] or "Error"), NAME_CHARS)
        message = text_block(str(reply.get("message", said.partition(":")[2])), lines=3,
                             limit=QUOTE_CHARS)
        driven = head.get("source") is not None  # the check's own code ran the notebook's
        function = str(reply.get("where") or ("" if driven else head["name"]))
        missing = reply.get("missing")
        if ename == "NameError" and isinstance(missing, str):
            text = (f"{missing} is not defined in your notebook (define it at the top level "
                    f"of a cell, with this name, and run the notebook from the top)")
            return StudentRaised(text, missing, ename, message)
        call = (call_text(str(head["name"]), args, kwargs) if not driven
                else f"{function}(...)" if function else "your notebook's code")
        text = f"{call} raised {ename}" + (f": {message}" if message else "")
        if ename == "MemoryError" and self.memory_mb:
            text += f" (the notebook's kernel may use at most {self.memory_mb} MB of memory)"
        return StudentRaised(text, function or str(head["name"]), ename, message)

    def _bounded(self, what: str, limit: float, run: Callable[[float], T]) -> T:
        """``run(seconds)`` within ``limit`` seconds and the time left to the check stage; a
        call cut short by the stage's limit says so."""
        seconds = min(limit, self.budget.remaining())
        try:
            return run(seconds)
        except StudentError:
            if seconds < limit and self.budget.used_up():
                raise ChecksTimeout(f"{what} was stopped: the checks of this submission ran "
                                    f"out of time ({self.budget.limit:g} s for all of "
                                    f"them)") from None
            raise

    def _request(self, head: dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
                 ) -> dict[str, Any]:
        request = {**head, "args": [encode(a) for a in args],
                   "kwargs": {k: encode(v) for k, v in kwargs.items()}}
        text = json.dumps(request)
        reply = self._bounded(head["name"], self.call_timeout,
                              lambda seconds: self._transport(text, seconds))
        if not reply.get("ok"):
            error = clip_end(str(reply.get("error", "unknown error")), LOG_CHARS)
            if reply.get("stage") == "arguments":
                # the spec built here (see _spec_to_wire); the kernel could not: its fault
                raise StudentError(f"the kernel could not build the arguments: {error}")
            if reply.get("stage") == "reply":
                raise StudentError(f"{head['name']} returned something that cannot be sent "
                                   f"back: {error}")
            raise self._raised(head, args, kwargs, reply)
        decoded = {"value": decode(reply.get("value")),
                   "args_after": [decode(a) for a in reply.get("args_after", [])]}
        self.answers.came(str(head["name"]))
        return decoded
