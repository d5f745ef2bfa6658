"""`grader check` where Linux's pieces are missing (a student's macOS or Windows laptop): run
here with ``os.fork`` gone and the modules the fork server needs made unimportable
(tests/portable/run.py), the code takes its portable path (a plain Jupyter kernel) for real.
It grades as the fork-server path does, and none of the grader's own modules imports a module
macOS or Windows lacks."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, write_notebook

from grader.pipeline.checking import describe
from grader.pipeline.grading import grade_notebook
from grader.records import Limits, Outcome

pytestmark = pytest.mark.kernel

RUN = Path(__file__).resolve().parent / "portable" / "run.py"

PUBLIC = '''import pytest


@pytest.mark.points(1)
def test_flops_public(student):
    """FLOPs of 10 MACs."""
    assert student.call("flops", 10) == 20, "flops(10) should be 20"
'''

COURSE = '''[course]
name = "Tiny course"
timezone = "Europe/Moscow"
last_lecture_day = 2026-12-08

[limits]
cell_timeout_s = 20
notebook_timeout_s = 60
call_timeout_s = 10

[[assignment]]
id = "hw1"
title = "FLOPs"
lecture_day = 2026-11-03
notebook = "hw1.ipynb"
'''


def portable(tmp_path: Path, *args: str, cwd: Path | None = None
             ) -> tuple[subprocess.CompletedProcess[str], dict[str, list[str]]]:
    report = tmp_path / "imports.json"
    done = subprocess.run([sys.executable, str(RUN), str(report), *args], capture_output=True,
                          text=True, timeout=900, cwd=cwd or tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    return done, json.loads(report.read_text()) if report.exists() else {"": ["no report"]}


@pytest.fixture
def kit(tmp_path) -> Path:
    """A course folder as a kit holds it: course.toml, a homework's public checks."""
    root = tmp_path / "kit"
    (root / "assignments" / "hw1" / "checks").mkdir(parents=True)
    (root / "assignments" / "hw1" / "checks" / "test_hw1_public.py").write_text(PUBLIC)
    (root / "course.toml").write_text(COURSE)
    return root


@pytest.mark.parametrize(("body", "code", "words"), [
    ("    return 2 * macs", 0, "1 passed, 0 failed"),
    ("    return macs", 1, "0 passed, 1 failed"),
])
def test_grader_check_runs_in_a_plain_kernel_where_linux_is_missing(tmp_path, kit, body, code,
                                                                   words):
    notebook = write_notebook(kit / "assignments" / "hw1" / "hw1.ipynb",
                              f"def flops(macs):\n{body}")
    # from another folder: the course file is found beside the notebook
    done, imports = portable(tmp_path, "check", str(notebook), cwd=tmp_path)
    assert done.returncode == code, done.stdout + done.stderr
    assert words in done.stdout
    assert "PASS flops: FLOPs of 10 MACs." in done.stdout or code
    assert "a plain Jupyter kernel" in done.stderr
    assert imports == {}, f"the grader imported what macOS or Windows lacks: {imports}"


def test_an_unreadable_notebook_is_exit_2_on_the_plain_path(tmp_path, kit):
    notebook = kit / "assignments" / "hw1" / "hw1.ipynb"
    notebook.write_text("[1, 2]")
    done, _ = portable(tmp_path, "check", str(notebook))
    assert done.returncode == 2
    assert "is JSON but not a notebook" in done.stderr


def _limits(assignment: str) -> Limits:
    del assignment  # the homeworks' own limits, as tests/test_homeworkN.py runs them
    return Limits(cell_timeout_s=120, notebook_timeout_s=300, call_timeout_s=60,
                  checks_timeout_s=600)


@pytest.mark.parametrize("assignment", ["hw1", "hw3"])
@pytest.mark.parametrize("which", ["reference", "template"])
def test_the_plain_path_grades_as_the_fork_server_does(tmp_path, assignment, which):
    folder = "solutions" if which == "reference" else "assignments"
    notebook = REPO / folder / assignment / f"{assignment}.ipynb"
    checks = REPO / "solutions" / assignment / "checks"
    limits = _limits(assignment)
    # the reference on its fast checks (the slow ones train the same way on both paths)
    select = None if which == "template" else [i.name for i in describe(checks) if not i.slow]
    execution, run = grade_notebook(notebook, checks, limits, seed=7, select=select)
    here = {r.name: [r.outcome.value, r.earned] for r in run.results}
    done, imports = portable(tmp_path, "grade-notebook", str(notebook), str(checks),
                             json.dumps(dataclasses.asdict(limits)), "7", json.dumps(select))
    assert done.returncode == 0, done.stderr[-3000:]
    there = json.loads(done.stdout.strip().splitlines()[-1])
    assert there["status"] == execution.status.value
    assert there["checks"] == here
    if which == "reference":
        assert all(outcome == Outcome.PASSED.value for outcome, _ in here.values())
    else:
        assert sum(earned for _, earned in here.values()) == 0
    assert imports == {}
