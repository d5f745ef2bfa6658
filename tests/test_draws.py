"""grader.checks draws: what a check may demand on a draw, and the grader's one-thread runs."""

from __future__ import annotations

import pytest
import torch

from grader.checks import Demand, demanded, one_thread


def _never() -> float:
    raise AssertionError("the reference run must not start when the floor is met")


@pytest.mark.parametrize(("measured", "floor", "reached", "minimum", "reference"), [
    (0.99, 0.97, None, 0.97, None),  # floor met: the reference never runs
    (0.97, 0.97, None, 0.97, None),  # exactly on the floor
    (0.95, 0.97, 0.99, 0.97, 0.99),  # short, and the grader's run clears the floor: floor stays
    (0.95, 0.97, 0.955, 0.945, 0.955),  # an unlucky draw: its own run less the margin
    (0.90, 0.97, 0.96, 0.95, 0.96),  # a wrong version on an unlucky draw still fails
])
def test_demanded(measured, floor, reached, minimum, reference):
    demand = demanded(measured, floor, _never if reached is None else lambda: reached, 0.01)
    assert demand == Demand(pytest.approx(minimum), reference)
    assert demand.met_by(measured) is (measured >= minimum - 1e-12)


def test_the_note_names_the_reference_only_when_it_ran():
    assert Demand(0.97).note() == ""
    assert "0.9550" in Demand(0.945, 0.955).note()


def test_one_thread_restores_the_thread_count():
    before = torch.get_num_threads()
    with one_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError), one_thread():
        raise ValueError("boom")
    assert torch.get_num_threads() == before
