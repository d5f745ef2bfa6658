"""Grading submissions: execute a notebook, run its checks, score it into a gradebook row.

The unit of work of every way the grader runs: ``grade_notebook`` (one notebook, ``grader
check``), ``grade_submission`` (one submission on its own, a cluster's task) and
``grade_stream`` (a worker's stream of submissions, each assignment's checks collected once).
None of them raises for anything a submission did: that becomes the row's status.
"""

from __future__ import annotations

import datetime as dt
import random
import time
import traceback
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import torch

from grader.course.config import Course
from grader.errors import GraderError, StudentError
from grader.kernel.judge import Judge
from grader.kernel.protocol import Budget, Student
from grader.pipeline.checking import RunChecks, run_checks, serve_checks
from grader.pipeline.execute import execute
from grader.pipeline.score import Deadlines, score
from grader.records import (
    CheckResult,
    CheckRun,
    Execution,
    GradeRow,
    Limits,
    Outcome,
    Status,
    Submission,
    Task,
    kept_cell_errors,
)
from grader.text import DETAIL_CHARS, first_line, one_line


def new_seed() -> int:
    """A fresh per-run seed for the hidden checks' draws (recorded in every row)."""
    return random.SystemRandom().randrange(2**31)


def grade_notebook(notebook: Path, check_dir: Path, limits: Limits, seed: int,
                   select: Collection[str] | None = None) -> tuple[Execution, CheckRun]:
    """Execute one notebook and run the checks in ``check_dir`` (or the ``select``ed ones)
    against its live kernel, within ``limits.checks_timeout_s`` for the whole check stage."""
    graded: list[tuple[Execution, CheckRun]] = []
    serve_checks(check_dir, [notebook],
                 lambda path, run: graded.append(_execute_and_check(path, limits, seed, run)),
                 select)
    return graded[0]


def _execute_and_check(notebook: Path, limits: Limits, seed: int,
                       run: RunChecks) -> tuple[Execution, CheckRun]:
    torch.set_num_threads(1)  # checks that train or evaluate share the cores with the kernel
    with execute(notebook, limits) as (execution, session):
        start = time.monotonic()
        student = None
        unavailable = f"not run: {execution.status.value}: {execution.detail}"
        if session is not None:
            try:
                session.install_bridge(limits.call_timeout_s)
                student = Student(session.request, limits.call_timeout_s,
                                  Judge(session.workdir, limits), Budget(limits.checks_timeout_s),
                                  memory_mb=limits.memory_mb)
            except StudentError as exc:
                unavailable = f"not run: {exc}"
        results = run(student, seed, unavailable)
        seconds = time.monotonic() - start
        if session is not None and session.lost:
            return execution, CheckRun(results, seconds, Status.KERNEL_LOST, session.lost)
        if student is not None and student.budget.expired:
            return execution, CheckRun(results, seconds, Status.CHECKS_TIMEOUT,
                                       f"the checks ran out of time after "
                                       f"{limits.checks_timeout_s:g} s; the rest failed unrun")
        return execution, CheckRun(results, seconds)


def deadlines_for(course: Course, assignment: str, student: str) -> Deadlines:
    """The late-rule inputs for one student's assignment, their extension included."""
    return Deadlines(course.assignment(assignment).lecture_day, course.last_lecture_day,
                     course.timezone, course.deadline_time, course.late_policy,
                     course.extensions.get((student, assignment)))


def late_fields(row_results: tuple[CheckResult, ...], sub: Submission,
                 course: Course) -> dict[str, Any]:
    s = score(row_results, sub.submitted_at, deadlines_for(course, sub.assignment, sub.student))
    return {"earned": s.earned, "possible": s.possible, "raw": s.raw, "cap": s.cap,
            "final": s.final,
            "late_reason": s.late_reason if not sub.time_problem
            else f"{s.late_reason} ({sub.time_problem})",
            "submitted_at": None if sub.submitted_at is None else sub.submitted_at.isoformat(),
            "time_problem": sub.time_problem}


def _row(sub: Submission, course: Course, execution: Execution, checks: CheckRun,
         seed: int) -> GradeRow:
    status, detail = execution.status, execution.detail
    cell_errors, more_cell_errors = kept_cell_errors(execution.cell_errors)
    if checks.problem is not None:
        status, detail = checks.problem, (f"{checks.detail} (before the checks: "
                                          f"{execution.detail})")
    broken = [r for r in checks.results if r.outcome is Outcome.ERROR]
    if broken and status is not Status.GRADER_ERROR:
        # a check broke on the grader's side: the row waits for a regrade, never charged
        status, detail = Status.GRADER_ERROR, (
            f"grader error in {len(broken)} check(s), first {broken[0].name}: "
            f"{first_line(broken[0].message)}; notebook: {detail}")
    late = late_fields(checks.results, sub, course)
    if status is Status.GRADER_ERROR:
        late["final"] = None  # pending: the instructor grades it again
    return GradeRow(
        student=sub.student, assignment=sub.assignment, sha256=sub.sha256, path=str(sub.path),
        status=status, detail=one_line(detail, DETAIL_CHARS), seed=seed,
        graded_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        seconds=round(execution.seconds + checks.seconds, 2),
        exec_seconds=round(execution.seconds, 2),
        checks=checks.results, cell_errors=cell_errors, more_cell_errors=more_cell_errors,
        **late)


def _graded_row(sub: Submission, course: Course, seed: int, run: RunChecks) -> GradeRow:
    """Grade one submission with ``run`` (its assignment's checks); never raises for anything
    the submission did. A failure of the grader itself is that row's ``grader_error``."""
    if sub.problem:
        execution = Execution(Status.MALFORMED, sub.problem, 0.0, 0)
        return _row(sub, course, execution,
                    CheckRun(run(None, seed, f"not run: {sub.problem}")), seed)
    start = time.monotonic()
    try:
        execution, checks = _execute_and_check(sub.path, course.limits, seed, run)
    except GraderError:
        raise
    except Exception as exc:  # noqa: BLE001 - one broken submission must not stop the batch
        traceback.print_exc()
        return grader_error_row(sub, course, seed, f"{type(exc).__name__}: {exc}",
                                time.monotonic() - start)
    return _row(sub, course, execution, checks, seed)


def grader_error_row(sub: Submission, course: Course, seed: int, why: str,
                     seconds: float = 0.0) -> GradeRow:
    """The row of a submission the grader failed on: every check fails, unrun."""
    detail = f"grader error: {why}"
    results = run_checks(course.hidden_checks(sub.assignment), None, seed,
                         unavailable=f"not run: {detail}")
    return _row(sub, course, Execution(Status.GRADER_ERROR, detail, seconds, 0),
                CheckRun(results), seed)


def grade_submission(sub: Submission, course: Course, seed: int) -> GradeRow:
    """Grade one submission (its checks collected for it alone); never raises for anything
    the submission did. The unit of work of a cluster's task."""
    rows: list[GradeRow] = []
    serve_checks(course.hidden_checks(sub.assignment), [sub],
                 lambda s, run: rows.append(_graded_row(s, course, seed, run)))
    return rows[0]


class Listener(Protocol):
    """What a driver (``pool``, ``cluster``) tells the run as it grades, in the run's process."""

    def note(self, text: str) -> None:
        """A sentence about the run as a whole (the cluster's size, say)."""

    def started(self, task: Task) -> None:
        """``task`` was handed to a kernel (or a worker)."""

    def done(self, task: Task, row: GradeRow) -> None:
        """``task``'s row is ready (the run stores it)."""


def grade_stream(course: Course, seed: int, tasks: Iterable[Task],
                 done: Callable[[Task, GradeRow], None]) -> None:
    """Grade the submissions of ``tasks`` in this process, in order, calling ``done`` with each
    row as soon as it is ready. Consecutive submissions of one assignment share one session of
    its checks: the check files are collected once for all of them."""
    pending = _Lookahead(iter(tasks))
    while (first := pending.peek()) is not None:
        assignment = first.submission.assignment
        serve_checks(course.hidden_checks(assignment), pending.while_on(assignment),
                     lambda task, run: done(task, _graded_row(task.submission, course, seed, run)))


class _Lookahead:
    """An iterator that can show its next item without taking it (None at the end)."""

    def __init__(self, items: Iterator[Task]) -> None:
        self._items = items
        self._next: Task | None = None

    def peek(self) -> Task | None:
        if self._next is None:
            self._next = next(self._items, None)
        return self._next

    def while_on(self, assignment: str) -> Iterator[Task]:
        """The next items, as long as they are submissions of ``assignment``."""
        while (item := self.peek()) is not None and item.submission.assignment == assignment:
            self._next = None
            yield item


