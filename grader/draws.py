"""Helpers for hidden checks that draw their inputs per run: a check may only demand what its
own draw guarantees.

A threshold measured on a few seeds promises nothing on an unlucky one. A check that trains a
model, runs an iterative method from a random start (CP-ALS), or calibrates on a random subset
demands a fixed floor; when the student's result falls short of it, ``demanded`` runs the
grader's own reference computation of the same recipe on the same draw, and the check asks no
more than what that run reaches, less a margin. A correct submission takes the same steps as
the grader's run (both on one thread), so an unlucky draw costs it nothing, while the realistic
wrong versions stay far below a reference run that is itself near the floor.

Public: ``Demand``, ``demanded``, ``one_thread``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

__all__ = ["Demand", "demanded", "one_thread"]


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
