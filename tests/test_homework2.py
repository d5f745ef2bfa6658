"""Homework 2 under its hidden checks: the tests of tests/homework_suite.py."""

from __future__ import annotations

import pytest
from homework_suite import Homework
from hw2_mutants import CAUGHT_BY, MUTANTS

from grader.records import Limits

pytestmark = pytest.mark.kernel

HOMEWORK = Homework(
    "hw2",
    Limits(cell_timeout_s=120, notebook_timeout_s=300, call_timeout_s=60),
    MUTANTS,
    min_points=45,
    caught_by=CAUGHT_BY,
)
globals().update(HOMEWORK.tests())
