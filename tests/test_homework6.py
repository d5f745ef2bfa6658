"""Homework 6 under its hidden checks: the reference earns everything on several draws, the
template nothing, and every realistic wrong version loses points.

The reference runs once; each wrong version then redefines its functions in that live kernel
by re-running the mutated cells, which is what the kernel of a notebook holding those cells
looks like when the checks call into it.
"""

from __future__ import annotations

import pytest
from conftest import REPO, write_notebook
from hw6_mutants import CONSTANTS_SOURCE, MUTANTS, apply_mutant

from grader.check import Outcome, run_checks
from grader.grading import grade_notebook
from grader.harness import checks_on, code_cells, redefined, score
from grader.records import Limits, Status

pytestmark = pytest.mark.kernel

REFERENCE = REPO / "solutions" / "hw6" / "hw6.ipynb"
TEMPLATE = REPO / "assignments" / "hw6" / "hw6.ipynb"
HIDDEN = REPO / "solutions" / "hw6" / "checks"
PUBLIC = REPO / "assignments" / "hw6" / "checks"
# the course's limits (course.toml), with room for a machine shared by other test runs
LIMITS = Limits(cell_timeout_s=60, notebook_timeout_s=240, call_timeout_s=30)


@pytest.mark.parametrize("seed", [11, 2024, 987654321])
def test_reference_earns_every_point_on_several_draws(reference, seed):
    _, student = reference
    results = run_checks(HIDDEN, student, seed)
    failed = [f"{r.name}: {r.message}" for r in results if r.outcome is not Outcome.PASSED]
    assert not failed
    assert score(results)[1] >= 30


def test_reference_passes_the_public_checks(reference):
    _, student = reference
    results = run_checks(PUBLIC, student, 0)
    failed = [f"{r.name}: {r.message}" for r in results if r.outcome is not Outcome.PASSED]
    assert not failed


@pytest.mark.parametrize("name", sorted(n for n in MUTANTS if n != "constants"))
def test_each_wrong_version_loses_points(reference, name):
    session, student = reference
    original = code_cells(REFERENCE)
    with redefined(session, original, apply_mutant(original, name)):
        results = run_checks(HIDDEN, student, seed=5)
    earned, possible = score(results)
    assert not [r.name for r in results if r.outcome is Outcome.ERROR]  # failures, not errors
    assert earned < possible, f"{name} kept every point"
    assert earned >= possible / 2, f"{name} lost more than its bug should cost"


def test_public_answers_as_constants_fail_the_hidden_checks(tmp_path):
    cells = apply_mutant(code_cells(REFERENCE), "constants")
    assert cells[-1] == CONSTANTS_SOURCE
    notebook = write_notebook(tmp_path / "hw6.ipynb", *cells)
    execution, (public, hidden) = checks_on(notebook, LIMITS, 1, PUBLIC, HIDDEN)  # one run
    assert execution.status is Status.OK, execution.detail
    public_earned, public_possible = score(public)
    hidden_earned, hidden_possible = score(hidden)
    # constants pass some public cases, and nearly nothing the hidden checks draw
    assert public_earned / public_possible > hidden_earned / hidden_possible
    assert hidden_earned <= 0.15 * hidden_possible


def test_the_untouched_template_scores_zero_without_breaking_anything():
    execution, checks = grade_notebook(TEMPLATE, HIDDEN, LIMITS, seed=3)
    results = checks.results
    assert execution.status is Status.CELL_ERROR
    assert "NotImplementedError" in execution.detail
    assert score(results)[0] == 0
    assert all(r.outcome is Outcome.FAILED for r in results)  # no grader errors
