"""The library for people who write checks: what a hidden or public check file imports.

A check is a pytest function with a ``points`` marker that takes the ``student`` fixture (the
student's live kernel, ``grader.protocol.Student``), and draws its inputs from ``rng`` /
``torch_rng``. This module gives it:

- module specs to send: ``layer("Conv2d", 16, 32, 3)``, ``seq(...)``, ``kit_model(...)``,
  ``probe("Sleep", ms=2.0)``; what comes back is a ``ReturnedModule``;
- ``oracles_agree``: the grader's own computations must agree before a student is judged by
  them; when they do not, it is a grader error, never the student's lost point;
- ``changed_state`` / ``changed_modes``: what a student's function changed in a module it was
  given, for checks that a function leaves its inputs as it found them.

See docs/checks.md for the whole protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from grader.protocol import (
    LayerInfo,
    ModuleSpec,
    ReturnedModule,
    Student,
    StudentError,
)

__all__ = [
    "GraderBug", "LayerInfo", "ModuleSpec", "ReturnedModule", "Student", "StudentError",
    "changed_modes", "changed_state", "kit_model", "layer", "oracles_agree", "probe", "seq",
]


class GraderBug(RuntimeError):
    """Two of the grader's own computations disagree: the check is wrong, not the student.
    The check ends as an error for the instructor, and the student loses nothing for it."""


def oracles_agree(agree: bool, what: str) -> None:
    """Stop the check as a grader error (``GraderBug``) unless ``agree``: call it where the
    check compares two oracles of its own (a closed form against FlopCounterMode, say)."""
    if not agree:
        raise GraderBug(f"grader oracles disagree: {what}")


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
