"""The tests every homework's hidden checks must pass, written once for all six.

A test module ``tests/test_homeworkN.py`` declares its ``HOMEWORK = homework("hwN", ...)``
(the limits its notebook runs under, the least its hidden checks are worth; its wrong versions
come from ``tests/hwN_mutants.py``) and imports the tests below by name (pytest collects them there,
marked ``kernel``):

- the reference earns every point on several draws, and passes the public checks;
- every realistic wrong version loses points: ``caught_by`` names the hidden checks of the
  function its bug is in, only those run, and each of them fails (not errors);
- a student who returns the public checks' answers as constants passes some public cases and
  nearly nothing the hidden checks draw;
- the untouched template scores 0 without a grader error.

The reference runs once per module (the ``reference`` fixture of conftest.py); each wrong
version then redefines its functions in that live kernel by re-running the mutated cells, which
is what the kernel of a notebook holding those cells looks like when the checks call into it,
and puts the reference back afterwards.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, constants_source, write_notebook

from grader.course.notebook import code_cells
from grader.pipeline.checking import Outcome, describe, run_checks
from grader.pipeline.grading import grade_notebook
from grader.records import CheckResult, Limits, Status
from grader.tools.harness import checks_on, redefined, replaced, score

__all__ = [
    "test_each_wrong_version_loses_points",
    "test_every_check_says_what_it_tests_in_a_whole_sentence",
    "test_public_answers_as_constants_fail_the_hidden_checks",
    "test_reference_earns_every_point_on_several_draws",
    "test_reference_passes_the_public_checks",
    "test_the_untouched_template_scores_zero_without_breaking_anything",
    "test_wrong_versions_name_checks_that_exist",
]

DRAWS = (11, 2024, 987654321)  # grading seeds the reference is tried on
WRONG_VERSION_SEED = 5
CONSTANTS_SHARE = 0.15  # the most of the hidden points a constants student may keep


def _unreadable(results: Sequence[CheckResult]) -> list[str]:
    """Failure messages a student could not act on: naming the checks' own helpers or tests, one
    error nested in another, a missing name told as a NameError, a grader error as theirs."""
    found = []
    for r in results:
        if r.outcome is not Outcome.FAILED:
            continue
        m = r.message
        if re.search(r"(?<![\w.])_[a-z]\w*(\(|\s+raised)", m) or re.search(r"\btest_\w+", m):
            found.append(f"{r.name}: names the check's own code: {m}")
        elif m.count(" raised ") > 1:
            found.append(f"{r.name}: one error nested in another: {m}")
        elif "raised NameError" in m or "grader error" in m:
            found.append(f"{r.name}: {m}")
    return found


def _failures(results: Sequence[CheckResult], *, allowed: Outcome | None = None) -> list[str]:
    # a challenge's partial points are a failure of the reference, whose run is the bar
    return [f"{r.name}: {r.outcome.value}: {r.message}" for r in results
            if (r.outcome is not Outcome.PASSED or r.earned < r.points)
            and r.outcome is not allowed]


@functools.cache
def _fast_checks(hidden: Path) -> tuple[str, ...]:
    return tuple(info.name for info in describe(hidden) if not info.slow)


@dataclass(frozen=True)
class Homework:
    """One homework under test. ``mutants``: wrong version -> its ``(old, new)`` source
    replacements in the reference's code cells; ``caught_by``: wrong version -> the hidden
    checks (names in the hidden check file) its bug must fail."""

    assignment: str
    limits: Limits
    mutants: Mapping[str, Sequence[tuple[str, str]]]
    min_points: int  # the hidden checks are worth at least this much
    caught_by: Mapping[str, Sequence[str]]

    @property
    def reference(self) -> Path:
        return REPO / "solutions" / self.assignment / f"{self.assignment}.ipynb"

    @property
    def template(self) -> Path:
        return REPO / "assignments" / self.assignment / f"{self.assignment}.ipynb"

    @property
    def hidden(self) -> Path:
        return REPO / "solutions" / self.assignment / "checks"

    @property
    def public(self) -> Path:
        return REPO / "assignments" / self.assignment / "checks"

    def wrong_versions(self) -> list[str]:
        return sorted(self.mutants)

    def mutated(self, cells: list[str], name: str) -> list[str]:
        """The reference's code cells with wrong version ``name`` applied (a new list)."""
        return replaced(cells, self.mutants[name], f"mutant {name!r}")

    def fast_checks(self) -> list[str]:
        """The hidden checks not marked ``slow_check``, as ``run_checks`` selects them."""
        return list(_fast_checks(self.hidden))

    def hidden_check_names(self) -> set[str]:
        names = set()
        for path in self.hidden.glob("test_*.py"):
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.startswith("def test_"):
                    names.add(line.removeprefix("def ").split("(")[0])
        return names


def homework(assignment: str, *, min_points: int, **limits: float) -> Homework:
    """The ``Homework`` of ``assignment``: its wrong versions and the checks each must fail from
    ``tests/<assignment>_mutants.py`` (``MUTANTS``, ``CAUGHT_BY``), its notebook run under
    ``Limits(**limits)``."""
    wrong = importlib.import_module(f"{assignment}_mutants")
    return Homework(assignment, Limits(**limits), wrong.MUTANTS, min_points, wrong.CAUGHT_BY)


# -- the tests, collected in each tests/test_homeworkN.py that imports them --------------------
# ``hw`` is that module's HOMEWORK (conftest.py); ``wrong_version`` runs over its wrong versions.


@pytest.mark.parametrize("seed", DRAWS)
def test_reference_earns_every_point_on_several_draws(hw, reference, seed):
    # every check on the first draw, the fast ones on the others: the checks marked
    # slow_check train or export, and `grader audit` tries them on its slow seeds
    _, student = reference
    full = seed == DRAWS[0]
    results = run_checks(hw.hidden, student, seed, select=None if full else hw.fast_checks())
    assert not _failures(results)
    if full:
        assert score(results)[1] >= hw.min_points
    else:
        assert len(results) == len(hw.fast_checks()) > 0


def test_reference_passes_the_public_checks(hw, reference):
    _, student = reference
    assert not _failures(run_checks(hw.public, student, 0))


def test_wrong_versions_name_checks_that_exist(hw):
    assert set(hw.caught_by) == set(hw.mutants), "every wrong version names its checks"
    missing = {c for checks in hw.caught_by.values() for c in checks}
    missing -= hw.hidden_check_names()
    assert not missing, f"caught_by names checks the hidden file lacks: {missing}"
    assert all(hw.caught_by.values())


def test_each_wrong_version_loses_points(hw, reference, wrong_version):
    session, student = reference
    original = code_cells(hw.reference)
    checks = hw.caught_by[wrong_version]
    select = [f"test_{hw.assignment}::{c}" for c in checks]
    with redefined(session, original, hw.mutated(original, wrong_version)):
        results = run_checks(hw.hidden, student, WRONG_VERSION_SEED, select=select)
    errors = [f"{r.name}: {r.message}" for r in results if r.outcome is Outcome.ERROR]
    assert not errors, f"{wrong_version}: grader errors, not failures: {errors}"
    assert sorted(r.name.split("::")[1] for r in results) == sorted(checks)
    kept = [r.name for r in results if r.earned >= r.points]  # a challenge's share is a loss
    assert not kept, f"{wrong_version} should lose points on {kept}"
    assert not _unreadable(results), _unreadable(results)


def test_public_answers_as_constants_fail_the_hidden_checks(hw, tmp_path):
    # the constants cell imports what it uses and redefines every graded function: on its
    # own, it is what a notebook ending with it answers the checks, minus the work
    notebook = write_notebook(tmp_path / f"{hw.assignment}.ipynb",
                              constants_source(hw.assignment))
    execution, (public, hidden) = checks_on(notebook, hw.limits, 1, hw.public, hw.hidden)
    assert execution.status is Status.OK, execution.detail
    assert not [r.name for r in hidden if r.outcome is Outcome.ERROR]
    public_earned, public_possible = score(public)
    hidden_earned, hidden_possible = score(hidden)
    assert public_earned / public_possible > hidden_earned / hidden_possible
    assert hidden_earned <= CONSTANTS_SHARE * hidden_possible


def test_the_untouched_template_scores_zero_without_breaking_anything(hw):
    execution, checks = grade_notebook(hw.template, hw.hidden, hw.limits, seed=3)
    assert execution.status is Status.CELL_ERROR
    assert "NotImplementedError" in execution.detail
    assert score(checks.results)[0] == 0
    assert not _failures(checks.results, allowed=Outcome.FAILED)  # no grader errors
    assert not _unreadable(checks.results), _unreadable(checks.results)


def test_every_check_says_what_it_tests_in_a_whole_sentence(hw):
    # its title, shown to students and instructors, is its docstring's first paragraph
    for folder in (hw.hidden, hw.public):
        for info in describe(folder):
            assert info.title != info.name, f"{info.name} has no docstring"
            assert info.title.endswith((".", "!", "?", ")")), f"{info.name}: {info.title!r}"
            # a student reads it: it names what they wrote, never the check file's own helpers
            helpers = re.findall(r"(?<![\w.*])_[a-z]\w*", info.title)
            assert not helpers, f"{info.name}: its title names the helpers {helpers}"
