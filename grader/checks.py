"""The library for people who write checks: what a hidden or public check file imports.

A check is a pytest function with a ``points`` marker that takes the ``student`` fixture (the
student's live kernel, ``grader.kernel.protocol.Student``), and draws its inputs from ``rng`` /
``torch_rng``. This module gives it:

- module specs to send: ``layer("Conv2d", 16, 32, 3)``, ``seq(...)``, ``kit_model(...)``,
  ``probe("Sleep", ms=2.0)``; what comes back is a ``ReturnedModule``;
- ``oracles_agree``: the grader's own computations must agree before a student is judged by
  them; when they do not, it is a grader error, never the student's lost point;
- ``changed_state`` / ``changed_modes``: what a student's function changed in a module it was
  given, for checks that a function leaves its inputs as it found them;
- ``refuses``: a call outside a function's contract raises the error its docstring promises;
- ``pair``, ``with_state``, ``returned_module``, ``pretrained_state``, ``accuracy_on_test_split``:
  the small helpers every homework's checks need (a size as a pair, a spec carrying the
  grader's own weights, a reply that must be a model, the kit's shipped weights, a model's
  accuracy on the course's test split);
- ``heldout_accuracy`` / ``once`` and the ``challenge`` fixture: a challenge (a homework's
  compression under a budget) is measured by the grader on held-out images the kit does not
  ship, and scored on a curve between a baseline and the grader's own reference run on the same
  draw, each run once per process (``grader.records.ChallengeResult``);
- ``demanded`` / ``Demand`` / ``one_thread``: a check may only demand what its own draw
  guarantees. A check that trains a model, runs an iterative method from a random start, or
  calibrates on a random subset demands a floor; when the student falls short of it on a draw,
  the grader runs its own copy of the recipe on the same draw (on one thread, as the kernel
  does) and demands no more than that run reaches, less a margin.

See docs/checks.md for the whole protocol.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from grader.errors import GraderBug, StudentError, StudentRaised
from grader.kernel.protocol import (
    LayerInfo,
    ModuleSpec,
    ReturnedModule,
    Student,
    call_text,
    short_repr,
)

__all__ = [
    "Demand", "GraderBug", "LayerInfo", "ModuleSpec", "ReturnedModule", "Student",
    "StudentError", "StudentRaised", "accuracy_on_test_split", "call_text", "changed_modes",
    "changed_state", "demanded", "heldout_accuracy", "heldout_split", "kit_model", "layer",
    "once", "one_thread", "oracles_agree", "pair", "pretrained_state", "probe", "refuses",
    "returned_module", "seq", "short_repr", "with_state",
]


def oracles_agree(agree: bool, what: str) -> None:
    """Stop the check as a grader error (``GraderBug``) unless ``agree``: call it where the
    check compares two oracles of its own (a closed form against FlopCounterMode, say)."""
    if not agree:
        raise GraderBug(f"grader oracles disagree: {what}")


def refuses(student: Student, function: str, *args: Any, error: str = "ValueError",
            why: str = "", **kwargs: Any) -> str:
    """Call ``function`` with arguments its docstring says it refuses, and demand that it raise
    ``error`` (an exception of that name): return the student's message, or fail the check
    saying what came back instead. ``why`` says what is outside the contract, for the message."""
    what = call_text(function, args, kwargs) + (f" ({why})" if why else "")
    try:
        got = student.call(function, *args, **kwargs)
    except StudentRaised as exc:
        if exc.ename == error:
            return exc.message
        raise AssertionError(f"{what} should raise {error}, not {exc.ename}"
                             + (f": {exc.message}" if exc.message else "")) from None
    except StudentError as exc:
        raise AssertionError(f"{what} should raise {error}; {exc}") from None
    raise AssertionError(f"{what} should raise {error}; it returned {short_repr(got)}")


def layer(name: str, *args: Any, state_dict: Mapping[str, torch.Tensor] | None = None,
          training: bool = False, **kwargs: Any) -> ModuleSpec:
    """``layer("Conv2d", 16, 32, 3, padding=1)`` is ``torch.nn.Conv2d(16, 32, 3, padding=1)``."""
    return ModuleSpec("layer", name, args, kwargs, state_dict=state_dict, training=training)


def seq(*children: ModuleSpec, state_dict: Mapping[str, torch.Tensor] | None = None,
        training: bool = False) -> ModuleSpec:
    """An ``nn.Sequential`` of the given specs."""
    return ModuleSpec("seq", "Sequential", children, state_dict=state_dict, training=training)


def kit_model(name: str, *args: Any, state_dict: Mapping[str, torch.Tensor] | None = None,
              training: bool = False, **kwargs: Any) -> ModuleSpec:
    """A course-kit constructor, e.g. ``kit_model("make_cnn", channels=(32, 64, 128))``."""
    return ModuleSpec("kit", name, args, kwargs, state_dict=state_dict, training=training)


def probe(name: str, **kwargs: Any) -> ModuleSpec:
    """A grader probe: ``Sleep(ms)`` sleeps then returns its input; ``CallCounter`` counts
    forward calls in its int64 buffer ``calls``."""
    return ModuleSpec("probe", name, (), kwargs)


def changed_state(before: Mapping[str, torch.Tensor], after: ReturnedModule) -> list[str]:
    """The state_dict entries of ``before`` that ``after`` lost or holds with other values
    (sorted): weights, biases and BatchNorm statistics a function should have left alone."""
    return sorted(key for key, value in before.items()
                  if key not in after.state_dict or not torch.equal(after.state_dict[key], value))


def changed_modes(after: ReturnedModule, training: bool) -> list[str]:
    """The modules of ``after`` (the root as ``<model>``) whose train/eval flag is no longer
    ``training``, the mode the module was sent in (sorted)."""
    return sorted(name or "<model>" for name, flag in after.training.items()
                  if flag != training)


@dataclass(frozen=True)
class Demand:
    """What a check demands of a measured quantity (higher is better) on one draw.

    ``minimum`` in the quantity's own unit (an accuracy: a fraction in [0, 1]); ``reference``
    is what the grader's own run of the recipe reached on the draw, when it had to be run."""

    minimum: float
    reference: float | None = None

    def met_by(self, measured: float) -> bool:
        return measured >= self.minimum

    def note(self) -> str:
        """Words for a failure message: where a lowered minimum comes from."""
        if self.reference is None:
            return ""
        return f" (the grader's own run of the recipe on this draw reaches {self.reference:.4f})"


def demanded(measured: float, floor: float, reference: Callable[[], float],
             margin: float) -> Demand:
    """The demand on this draw: ``floor`` when ``measured`` reaches it; otherwise at most what
    ``reference()`` (the grader's own run of the same recipe on the same draw, called only
    then) reaches, less ``margin``. All in the quantity's unit (accuracy: a fraction)."""
    if measured >= floor:
        return Demand(floor)
    reached = float(reference())
    return Demand(min(floor, reached - margin), reached)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the enclosed torch work on one thread, as the student's kernel does, and restore the
    thread count: the same recipe then takes the same float path (and on a shared 2-core
    machine two threads can be 10-50 x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def pair(value: int | Sequence[int]) -> tuple[int, int]:
    """A size given as one int or as two (``kernel_size=3`` or ``(3, 5)``), as two ints."""
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[1]))


def with_state(spec: ModuleSpec, module: nn.Module) -> ModuleSpec:
    """``spec`` carrying a copy of ``module``'s weights and buffers: the kernel builds the same
    module the grader holds, so both sides compute on the same numbers."""
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    return dataclasses.replace(spec, state_dict=state)


def returned_module(got: object, what: str) -> ReturnedModule:
    """``got`` as a returned model, or a failed check saying ``what`` should return one."""
    assert isinstance(got, ReturnedModule), (
        f"{what} should return a model (an nn.Module), got {type(got).__name__}")
    return got


def pretrained_state(name: str) -> dict[str, torch.Tensor]:
    """A fresh copy of the weights the course kit ships as ``name`` (``nncourse.load_pretrained``),
    safe to modify."""
    import nncourse

    return {k: v.detach().clone() for k, v in nncourse.load_pretrained(name).state_dict().items()}


def accuracy_on_test_split(model: nn.Module, what: str = "the returned model") -> float:
    """``model``'s accuracy (a fraction in [0, 1]) on the 300 test images the course kit ships,
    run in the grader's process; layers that do not fit together fail the check with ``what``
    named."""
    import nncourse

    _, _, x_test, y_test = nncourse.load_digits_split()
    return _accuracy(model, x_test, y_test, what, "the test images")


def heldout_split(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out digits stored at ``path`` (written by scripts/make_digits.py beside a
    homework's hidden checks, never in the kit): images (N, 1, 8, 8) in [0, 1] and int64
    labels, as ``nncourse.load_digits_split`` gives the kit's. FileNotFoundError names a
    missing file."""
    from nncourse.data import as_tensors

    if not path.is_file():
        raise FileNotFoundError(f"no held-out digits at {path} (scripts/make_digits.py writes "
                                "them)")
    data = torch.load(path, weights_only=True)
    return as_tensors(data["pixels"], data["labels"])


def heldout_accuracy(model: nn.Module, path: Path, what: str = "the returned model") -> float:
    """``model``'s accuracy (a fraction in [0, 1]) on the held-out digits at ``path``: images
    that neither the kit nor the student's kernel holds, run in the grader's process."""
    x, y = heldout_split(path)
    return _accuracy(model, x, y, what, "the held-out images")


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, what: str,
              images: str) -> float:
    import nncourse

    try:
        return float(nncourse.evaluate(model, x, y))
    except RuntimeError as error:
        raise AssertionError(f"{what} fails on {images}: {str(error)[:300]}") from None


_ONCE: dict[Hashable, Any] = {}
_ONCE_KEPT = 64


def once(key: Hashable, compute: Callable[[], Any], student: Student | None = None) -> Any:
    """``compute()``, run the first time this process asks for ``key`` and kept: for the
    grader's own runs that are the same for every student of a grading run (a challenge's
    reference and baseline on the run's draw), so a class of hundreds pays for them once per
    grading process. ``key`` must hold everything the result depends on: the check's name and
    every drawn value (the latest 64 keys are kept). With ``student``, the time ``compute``
    takes is not counted against that submission's time for its checks."""
    if key not in _ONCE:
        if len(_ONCE) >= _ONCE_KEPT:
            del _ONCE[next(iter(_ONCE))]
        with student.budget.paused() if student is not None else contextlib.nullcontext():
            _ONCE[key] = compute()
    return _ONCE[key]
