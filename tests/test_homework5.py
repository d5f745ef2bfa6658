"""Homework 5 under its hidden checks: the reference earns everything on several draws, the
template nothing, and every realistic wrong version loses points.

The reference runs once; each wrong version then redefines its functions in that live kernel
by re-running the mutated cells, which is what the kernel of a notebook holding those cells
looks like when the checks call into it. The checks judge the files the kernel writes, so the
student here has a judge over the kernel's working folder, as in a grading run.

A wrong version runs against the checks written to catch it (`CAUGHT_BY`), each of which must
fail: that shows it loses points, and it spares the ONNX export and the judge's fresh Python
for the mutants that do not touch the exported files.
"""

from __future__ import annotations

import pytest
from conftest import REPO, write_notebook
from hw5_mutants import CAUGHT_BY, CONSTANTS_SOURCE, MUTANTS, apply_mutant

from grader.check import Outcome, run_checks
from grader.grading import grade_notebook
from grader.harness import checks_on, code_cells, redefined, score
from grader.records import Limits, Status

pytestmark = pytest.mark.kernel

REFERENCE = REPO / "solutions" / "hw5" / "hw5.ipynb"
TEMPLATE = REPO / "assignments" / "hw5" / "hw5.ipynb"
HIDDEN = REPO / "solutions" / "hw5" / "checks"
PUBLIC = REPO / "assignments" / "hw5" / "checks"
# a loaded 2-core machine: the notebook takes 20-60 s, its first cell (imports) up to 15 s
LIMITS = Limits(cell_timeout_s=90, notebook_timeout_s=240, call_timeout_s=30)


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


def test_every_mutant_names_the_checks_that_catch_it():
    assert set(CAUGHT_BY) == set(MUTANTS) - {"constants"}
    assert all(CAUGHT_BY.values())


@pytest.mark.parametrize("name", sorted(CAUGHT_BY))
def test_each_wrong_version_loses_points(reference, name):
    session, student = reference
    original = code_cells(REFERENCE)
    with redefined(session, original, apply_mutant(original, name)):
        results = run_checks(HIDDEN, student, seed=5,
                             select=[f"test_hw5::{check}" for check in CAUGHT_BY[name]])
    assert sorted(r.name.split("::")[1] for r in results) == sorted(CAUGHT_BY[name])
    passed = [r.name for r in results if r.outcome is Outcome.PASSED]
    assert not passed, f"{name} passed {passed}, written to catch it"
    errors = [f"{r.name}: {r.message}" for r in results if r.outcome is Outcome.ERROR]
    assert not errors, f"{name} made the grader fail: {errors}"


def test_public_answers_as_constants_fail_the_hidden_checks(tmp_path):
    cells = apply_mutant(code_cells(REFERENCE), "constants")
    assert cells[-1] == CONSTANTS_SOURCE
    # the constants cell alone (it imports what it uses): a notebook that writes no file
    notebook = write_notebook(tmp_path / "hw5.ipynb", CONSTANTS_SOURCE)
    execution, (public, hidden) = checks_on(notebook, LIMITS, 1, PUBLIC, HIDDEN)
    assert execution.status is Status.OK, execution.detail
    public_earned, public_possible = score(public)
    hidden_earned, hidden_possible = score(hidden)
    # constants pass some public cases, and nothing the hidden checks draw
    assert public_earned / public_possible > hidden_earned / hidden_possible
    assert hidden_earned == 0, [r.name for r in hidden if r.outcome is Outcome.PASSED]
    assert not [r for r in public + hidden if r.outcome is Outcome.ERROR]


def test_the_untouched_template_scores_zero_without_breaking_anything():
    execution, checks = grade_notebook(TEMPLATE, HIDDEN, LIMITS, seed=3)
    results = checks.results
    assert execution.status is Status.CELL_ERROR
    assert "NotImplementedError" in execution.detail
    assert score(results)[0] == 0
    assert all(r.outcome is Outcome.FAILED for r in results)  # no grader errors
