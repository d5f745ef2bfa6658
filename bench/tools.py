"""Each grader of the throughput benchmark: its course layout, set up in a folder of its own
(not timed), the commands that grade the N submissions (timed), and a look at what it wrote
afterwards (every submission must have earned every point, or the run does not count).

Only this grader sandboxes its kernels (bubblewrap); nbgrader, otter and the bare loop run
theirs as plain processes. This grader is also run with ``sandbox = "off"``, like for like.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nbformat

from bench import homework
from bench.bare import THREAD_ENV

REPO = Path(__file__).resolve().parents[1]

Verify = Callable[[], list[str]]  # the problems found in what the run wrote (none: all right)


@dataclass(frozen=True)
class Tool:
    """One way of grading the submissions."""

    name: str  # the id on the command line
    label: str  # what the table says
    sandboxed: bool
    jobs: int  # submissions at once
    needs: str = ""  # the module that must be importable, if any


@dataclass(frozen=True)
class Plan:
    """A prepared run: the commands to time (run in ``cwd`` in turn) and how to verify it."""

    commands: list[list[str]]
    cwd: Path
    verify: Verify


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0))


def tools() -> dict[str, Tool]:
    """Every tool the benchmark knows, by id, in the order they run."""
    n = cores()
    return {t.name: t for t in (
        Tool("nbgrader", "nbgrader autograde", False, 1, needs="nbgrader"),
        Tool("otter", "otter run (one per submission)", False, 1, needs="otter"),
        Tool("bare", "bare nbclient loop (no checks)", False, 1),
        Tool("grader", f"this grader, --jobs {n}", True, n),
        Tool("grader-1", "this grader, --jobs 1", True, 1),
        Tool("grader-off", f"this grader, --jobs {n}, sandbox off", False, n),
        Tool("grader-off-1", "this grader, --jobs 1, sandbox off", False, 1),
    )}


def installed(tool: Tool) -> bool:
    """Whether ``tool`` can run here (nbgrader and otter are the optional ``bench`` extra)."""
    return not tool.needs or importlib.util.find_spec(tool.needs) is not None


def environment() -> dict[str, str]:
    """The environment every tool runs in: this one as an activated virtual environment
    would make it (nbgrader runs ``alembic`` from PATH), one thread per kernel, the benchmark
    importable."""
    env = dict(os.environ)
    env.update(THREAD_ENV)
    env["PATH"] = os.pathsep.join((os.path.dirname(sys.executable), env.get("PATH", "")))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def _script(name: str) -> str:
    """A console script of this Python environment."""
    return str(Path(sys.executable).with_name(name))


def prepare(tool: Tool, folder: Path, submissions: Path, n: int) -> Plan:
    """Set up ``tool``'s layout in ``folder`` for the ``n`` submissions under ``submissions``
    (``<student>/hw/hw.ipynb``); nothing here is timed."""
    folder.mkdir(parents=True)
    if tool.name == "nbgrader":
        return _nbgrader(folder, n)
    if tool.name == "otter":
        return _otter(folder, submissions, n)
    if tool.name == "bare":
        notebooks = [str(submissions / s / homework.ASSIGNMENT / homework.NOTEBOOK)
                     for s in homework.students(n)]
        return Plan([[sys.executable, "-m", "bench.bare", *notebooks]], folder, lambda: [])
    return _grader(tool, folder, submissions, n)


def _grader(tool: Tool, folder: Path, submissions: Path, n: int) -> Plan:
    course = homework.write_course(folder / "course", "required" if tool.sandboxed else "off")
    table = folder / "gradebook.csv"
    command = [sys.executable, "-c", "from grader.cli.main import main; main()", "grade",
               str(submissions), "--course", str(course),
               "--gradebook", str(folder / "gradebook.sqlite"), "--csv", str(table),
               "--feedback", str(folder / "feedback"), "--jobs", str(tool.jobs), "--seed", "1"]

    def verify() -> list[str]:
        if not table.is_file():
            return [f"no gradebook CSV at {table}"]
        with table.open(newline="") as f:
            rows = list(csv.DictReader(f))
        raw, status = f"{homework.ASSIGNMENT}_raw", f"{homework.ASSIGNMENT}_status"
        problems = [f"{r['student']}: {r[status]}, raw {r[raw]} %" for r in rows
                    if (r[raw], r[status]) != ("100.00", "ok")]
        return problems + ([f"{len(rows)} rows, expected {n}"] if len(rows) != n else [])

    return Plan([command], folder, verify)


def _nbgrader(folder: Path, n: int) -> Plan:
    source = folder / "source" / homework.ASSIGNMENT / homework.NOTEBOOK
    source.parent.mkdir(parents=True)
    nbformat.write(homework.nbgrader_source(), source)
    nbgrader = _script("nbgrader")
    subprocess.run([nbgrader, "generate_assignment", homework.ASSIGNMENT, "--course-dir",
                    str(folder), "--force", "--log-level=ERROR"], check=True,
                   env=environment(), capture_output=True)
    release = nbformat.read(folder / "release" / homework.ASSIGNMENT / homework.NOTEBOOK, 4)
    for i, student in enumerate(homework.students(n)):
        path = folder / "submitted" / student / homework.ASSIGNMENT / homework.NOTEBOOK
        path.parent.mkdir(parents=True)
        nbformat.write(homework.nbgrader_submission(release, i, student), path)
        (path.parent / "timestamp.txt").write_text("2026-11-04 10:00:00.000000 UTC")

    def verify() -> list[str]:
        problems = []
        for student in homework.students(n):
            path = folder / "autograded" / student / homework.ASSIGNMENT / homework.NOTEBOOK
            if not path.is_file():
                problems.append(f"{student}: not autograded")
                continue
            tests = [c for c in nbformat.read(path, 4).cells
                     if c.get("metadata", {}).get("nbgrader", {}).get("grade")]
            ran = [c for c in tests if "BEGIN HIDDEN TESTS" in c.source and c.get("outputs")
                   is not None and c.get("execution_count")]
            failed = [c for c in tests if any(o.output_type == "error" for o in c.outputs)]
            if len(ran) != len(homework.CHECKS) or failed:
                problems.append(f"{student}: {len(ran)} hidden test cell(s) ran, "
                                f"{len(failed)} failed")
        return problems

    return Plan([[nbgrader, "autograde", homework.ASSIGNMENT, "--course-dir", str(folder),
                  "--log-level=ERROR"]], folder, verify)


def _otter(folder: Path, submissions: Path, n: int) -> Plan:
    tests = folder / "tests"
    tests.mkdir()
    for check in homework.CHECKS:
        (tests / f"{check.name}.py").write_text(homework.otter_test_file(check))
    autograder = folder / "autograder.zip"
    subprocess.run([_script("otter"), "generate", "--tests-dir", str(tests), "--output-path",
                    str(autograder), "--no-config", "--no-requirements", "--no-environment"],
                   check=True, cwd=folder, env=environment(), capture_output=True)
    commands, results = [], []
    for student in homework.students(n):
        notebook = folder / "submissions" / f"{student}.ipynb"
        notebook.parent.mkdir(exist_ok=True)
        shutil.copyfile(submissions / student / homework.ASSIGNMENT / homework.NOTEBOOK,
                        notebook)
        out = folder / "results" / student
        out.mkdir(parents=True)
        results.append(out / "results.json")
        commands.append([_script("otter"), "run", str(notebook), "--autograder",
                         str(autograder), "--output-dir", str(out), "--no-logo"])
    possible = sum(c.points for c in homework.CHECKS)

    def verify() -> list[str]:
        problems = []
        for path in results:
            if not path.is_file():
                problems.append(f"{path.parent.name}: no results.json")
                continue
            # Gradescope's format; the scored entries are the checks ("Public Tests" is not)
            tests_run = [t for t in json.loads(path.read_text()).get("tests", [])
                         if "max_score" in t]
            earned = sum(t.get("score", 0) for t in tests_run)
            if len(tests_run) != len(homework.CHECKS) or earned != possible:
                problems.append(f"{path.parent.name}: {earned} of {possible} points over "
                                f"{len(tests_run)} test(s)")
        return problems

    return Plan(commands, folder, verify)
