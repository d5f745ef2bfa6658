"""Homework 1 under its hidden checks: the reference earns everything on several draws, the
template nothing, and every realistic wrong version loses points.

The reference runs once; each wrong version then redefines its functions in that live kernel
by re-running the mutated cells, which is what the kernel of a notebook holding those cells
looks like when the checks call into it.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from conftest import REPO, write_notebook
from hw1_mutants import CONSTANTS_SOURCE, MUTANTS, apply_mutant

from grader.check import Outcome, run_checks
from grader.execute import execute
from grader.grading import grade_notebook
from grader.protocol import Student
from grader.records import Limits, Status

pytestmark = pytest.mark.kernel

REFERENCE = REPO / "solutions" / "hw1" / "hw1.ipynb"
TEMPLATE = REPO / "assignments" / "hw1" / "hw1.ipynb"
HIDDEN = REPO / "solutions" / "hw1" / "checks"
PUBLIC = REPO / "assignments" / "hw1" / "checks"
LIMITS = Limits(cell_timeout_s=60, notebook_timeout_s=180, call_timeout_s=30)


def _code_cells(path: Path) -> list[str]:
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def _score(results) -> tuple[float, float]:
    return sum(r.earned for r in results), sum(r.points for r in results)


@pytest.fixture(scope="module")
def reference():
    with execute(REFERENCE, LIMITS) as (execution, session):
        assert execution.status is Status.OK, execution.detail
        session.install_bridge(30)
        yield session, Student(session.request, LIMITS.call_timeout_s)


@pytest.mark.parametrize("seed", [11, 2024, 987654321])
def test_reference_earns_every_point_on_several_draws(reference, seed):
    _, student = reference
    results = run_checks(HIDDEN, student, seed)
    failed = [f"{r.name}: {r.message}" for r in results if r.outcome is not Outcome.PASSED]
    assert not failed
    assert _score(results)[1] >= 30


def test_reference_passes_the_public_checks(reference):
    _, student = reference
    assert all(r.outcome is Outcome.PASSED for r in run_checks(PUBLIC, student, 0))


@pytest.mark.parametrize("name", sorted(n for n in MUTANTS if n != "constants"))
def test_each_wrong_version_loses_points(reference, name):
    session, student = reference
    original = _code_cells(REFERENCE)
    mutated = apply_mutant(original, name)
    changed = [i for i, (a, b) in enumerate(zip(original, mutated, strict=True)) if a != b]
    try:
        for i in changed:
            session.send_source(mutated[i], 30)
        earned, possible = _score(run_checks(HIDDEN, student, seed=5))
    finally:
        for i in changed:
            session.send_source(original[i], 30)
    assert earned < possible, f"{name} kept every point"
    assert earned >= possible / 2, f"{name} lost more than its bug should cost"


def test_public_answers_as_constants_fail_the_hidden_checks(tmp_path):
    cells = apply_mutant(_code_cells(REFERENCE), "constants")
    assert cells[-1] == CONSTANTS_SOURCE
    notebook = write_notebook(tmp_path / "hw1.ipynb", *cells)
    _, public_run = grade_notebook(notebook, PUBLIC, LIMITS, seed=1)
    public = public_run.results
    _, hidden_run = grade_notebook(notebook, HIDDEN, LIMITS, seed=1)
    hidden = hidden_run.results
    public_earned, public_possible = _score(public)
    hidden_earned, hidden_possible = _score(hidden)
    # constants pass some public cases, and nearly nothing the hidden checks draw
    assert public_earned / public_possible > hidden_earned / hidden_possible
    assert hidden_earned <= 0.15 * hidden_possible


def test_the_untouched_template_scores_zero_without_breaking_anything():
    execution, checks = grade_notebook(TEMPLATE, HIDDEN, LIMITS, seed=3)
    results = checks.results
    assert execution.status is Status.CELL_ERROR
    assert "NotImplementedError" in execution.detail
    assert _score(results)[0] == 0
    assert all(r.outcome is Outcome.FAILED for r in results)  # no grader errors
