"""Homework 4 under its hidden checks: the tests of tests/homework_suite.py."""

from __future__ import annotations

import pytest
from homework_suite import Homework
from hw4_mutants import CAUGHT_BY, MUTANTS

from grader.records import Limits

pytestmark = [
    pytest.mark.kernel,
    # torch.load(weights_only=True) of a quantized state_dict (grader/protocol.py reading the
    # int8 models) warns once per process about torch's legacy storage and quantized tensor
    # creation; this suite turns warnings into errors, the grader does not.
    pytest.mark.filterwarnings("ignore:TypedStorage is deprecated:UserWarning"),
    pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor, torch.quantize_per_channel"),
]

HOMEWORK = Homework(
    "hw4",
    Limits(cell_timeout_s=60, notebook_timeout_s=180, call_timeout_s=30),
    MUTANTS,
    min_points=40,
    caught_by=CAUGHT_BY,
)
globals().update(HOMEWORK.tests())
