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

import ast
from pathlib import Path

import nbformat
import pytest
from conftest import REPO, write_notebook
from hw5_mutants import CAUGHT_BY, CONSTANTS_SOURCE, MUTANTS, apply_mutant

from grader.check import Outcome, run_checks
from grader.execute import execute
from grader.grading import grade_notebook
from grader.judge import Judge
from grader.protocol import Student
from grader.records import Limits, Status

pytestmark = pytest.mark.kernel

REFERENCE = REPO / "solutions" / "hw5" / "hw5.ipynb"
TEMPLATE = REPO / "assignments" / "hw5" / "hw5.ipynb"
HIDDEN = REPO / "solutions" / "hw5" / "checks"
PUBLIC = REPO / "assignments" / "hw5" / "checks"
# a loaded 2-core machine: the notebook takes 20-60 s, its first cell (imports) up to 15 s
LIMITS = Limits(cell_timeout_s=90, notebook_timeout_s=240, call_timeout_s=30)


def _code_cells(path: Path) -> list[str]:
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def _score(results) -> tuple[float, float]:
    return sum(r.earned for r in results), sum(r.points for r in results)


def _checks_subset(folder: Path, names: list[str]) -> Path:
    """A checks folder holding only the hidden checks `names` (the others deleted from the
    module after it defines them), everything else of the file as it is."""
    source = (HIDDEN / "test_hw5.py").read_text(encoding="utf-8")
    tests = [node.name for node in ast.parse(source).body
             if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")]
    unknown = sorted(set(names) - set(tests))
    assert not unknown, f"no such hidden checks: {unknown}"
    dropped = [t for t in tests if t not in names]
    folder.mkdir()
    tail = f"\n\ndel {', '.join(dropped)}\n" if dropped else ""
    (folder / "test_hw5.py").write_text(source + tail, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def reference():
    with execute(REFERENCE, LIMITS) as (execution, session):
        assert execution.status is Status.OK, execution.detail
        session.install_bridge(30)
        yield session, Student(session.request, LIMITS.call_timeout_s,
                               Judge(session.workdir, LIMITS))


@pytest.mark.parametrize("seed", [11, 2024, 987654321])
def test_reference_earns_every_point_on_several_draws(reference, seed):
    _, student = reference
    results = run_checks(HIDDEN, student, seed)
    failed = [f"{r.name}: {r.message}" for r in results if r.outcome is not Outcome.PASSED]
    assert not failed
    assert _score(results)[1] >= 30


def test_reference_passes_the_public_checks(reference):
    _, student = reference
    results = run_checks(PUBLIC, student, 0)
    failed = [f"{r.name}: {r.message}" for r in results if r.outcome is not Outcome.PASSED]
    assert not failed


def test_every_mutant_names_the_checks_that_catch_it():
    assert set(CAUGHT_BY) == set(MUTANTS) - {"constants"}
    assert all(CAUGHT_BY.values())


@pytest.mark.parametrize("name", sorted(CAUGHT_BY))
def test_each_wrong_version_loses_points(reference, name, tmp_path):
    session, student = reference
    original = _code_cells(REFERENCE)
    mutated = apply_mutant(original, name)
    changed = [i for i, (a, b) in enumerate(zip(original, mutated, strict=True)) if a != b]
    checks = _checks_subset(tmp_path / "checks", CAUGHT_BY[name])
    try:
        for i in changed:
            session.send_source(mutated[i], 30)
        results = run_checks(checks, student, seed=5)
    finally:
        for i in changed:
            session.send_source(original[i], 30)
    assert sorted(r.name.split("::")[1] for r in results) == sorted(CAUGHT_BY[name])
    passed = [r.name for r in results if r.outcome is Outcome.PASSED]
    assert not passed, f"{name} passed {passed}, written to catch it"
    errors = [f"{r.name}: {r.message}" for r in results if r.outcome is Outcome.ERROR]
    assert not errors, f"{name} made the grader fail: {errors}"


def test_public_answers_as_constants_fail_the_hidden_checks(tmp_path):
    cells = apply_mutant(_code_cells(REFERENCE), "constants")
    assert cells[-1] == CONSTANTS_SOURCE
    # the constants cell alone (it imports what it uses): a notebook that writes no file
    notebook = write_notebook(tmp_path / "hw5.ipynb", CONSTANTS_SOURCE)
    with execute(notebook, LIMITS) as (execution, session):
        assert execution.status is Status.OK, execution.detail
        session.install_bridge(30)
        student = Student(session.request, LIMITS.call_timeout_s, Judge(session.workdir, LIMITS))
        public = run_checks(PUBLIC, student, seed=1)
        hidden = run_checks(HIDDEN, student, seed=1)
    public_earned, public_possible = _score(public)
    hidden_earned, hidden_possible = _score(hidden)
    # constants pass some public cases, and nothing the hidden checks draw
    assert public_earned / public_possible > hidden_earned / hidden_possible
    assert hidden_earned == 0, [r.name for r in hidden if r.outcome is Outcome.PASSED]
    assert not [r for r in public + hidden if r.outcome is Outcome.ERROR]


def test_the_untouched_template_scores_zero_without_breaking_anything():
    execution, checks = grade_notebook(TEMPLATE, HIDDEN, LIMITS, seed=3)
    results = checks.results
    assert execution.status is Status.CELL_ERROR
    assert "NotImplementedError" in execution.detail
    assert _score(results)[0] == 0
    assert all(r.outcome is Outcome.FAILED for r in results)  # no grader errors
