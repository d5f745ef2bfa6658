"""Homework 6 under its hidden checks: the tests of tests/homework_suite.py."""

from __future__ import annotations

import pytest
from homework_suite import Homework
from hw6_mutants import CAUGHT_BY, MUTANTS

from grader.records import Limits

pytestmark = pytest.mark.kernel

HOMEWORK = Homework(
    "hw6",
    Limits(cell_timeout_s=60, notebook_timeout_s=240, call_timeout_s=30),
    MUTANTS,
    min_points=30,
    caught_by=CAUGHT_BY,
)
globals().update(HOMEWORK.tests())
