"""The grading run: discover -> execute -> check -> score -> store.

A failure inside one submission becomes that submission's status and the batch goes on; only
problems of the course itself (bad course.toml, checks without points) stop a run, and they stop
it before any notebook is executed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import time
import traceback
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from grader.check import RunChecks, collect, run_checks, serve_checks
from grader.config import Course
from grader.discover import discover
from grader.errors import GraderError
from grader.execute import execute
from grader.judge import Judge
from grader.protocol import Budget, Student, StudentError
from grader.records import CheckResult, CheckRun, Execution, GradeRow, Limits, Status, Submission
from grader.sandbox import use_sandbox
from grader.score import Deadlines, score
from grader.store import Gradebook


@dataclass(frozen=True)
class Graded:
    """What a run did with one submission: the stored row, and whether it was regraded."""

    submission: Submission
    row: GradeRow
    skipped: bool  # unchanged since the stored row, not graded again


class Progress:
    """What a grading run tells as it goes; the CLI prints it, a library caller may ignore
    it (the default does nothing)."""

    def note(self, text: str) -> None:
        """A sentence about the run as a whole (its size, its seed, the sandbox)."""

    def planned(self, total: int) -> None:
        """How many submissions this run will grade (the unchanged ones not counted)."""

    def started(self, sub: Submission) -> None:
        """A submission was handed to a kernel."""

    def finished(self, graded: Graded) -> None:
        """A submission's row is stored (``graded.skipped``: kept from an earlier run)."""


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
                                  Judge(session.workdir, limits), Budget(limits.checks_timeout_s))
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


def _late_fields(row_results: tuple[CheckResult, ...], sub: Submission,
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
    if checks.problem is not None:
        status, detail = checks.problem, f"{checks.detail}; notebook: {execution.detail}"
    return GradeRow(
        student=sub.student, assignment=sub.assignment, sha256=sub.sha256, path=str(sub.path),
        status=status, detail=detail, seed=seed,
        graded_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        seconds=round(execution.seconds + checks.seconds, 2),
        exec_seconds=round(execution.seconds, 2),
        checks=GradeRow.encode_checks(checks.results),
        cell_errors=GradeRow.encode_cell_errors(execution.cell_errors),
        **_late_fields(checks.results, sub, course))


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


Task = tuple[int, Submission]


def grade_stream(course: Course, seed: int, tasks: Iterable[Task],
                 done: Callable[[Task, GradeRow], None]) -> None:
    """Grade the submissions of ``tasks`` in this process, in order, calling ``done`` with each
    row as soon as it is ready. Consecutive submissions of one assignment share one session of
    its checks: the check files are collected once for all of them."""
    pending = _Lookahead(iter(tasks))
    while (first := pending.peek()) is not None:
        assignment = first[1].assignment
        serve_checks(course.hidden_checks(assignment), pending.while_on(assignment),
                     lambda task, run: done(task, _graded_row(task[1], course, seed, run)))


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
        while (item := self.peek()) is not None and item[1].assignment == assignment:
            self._next = None
            yield item


def gradable(course: Course) -> list[str]:
    """The assignments that have hidden checks (the default set of a grading run)."""
    return [a.id for a in course.assignments if course.hidden_checks(a.id).is_dir()]


def grade_all(course: Course, submissions_root: Path, book: Gradebook,
              assignments: Sequence[str] = (), force: bool = False, seed: int | None = None,
              progress: Progress | None = None, jobs: int = 1,
              scheduler: str | None = None) -> list[Graded]:
    """Grade every submission under ``submissions_root`` into ``book``, ``jobs`` at a time, or
    on the Dask cluster at ``scheduler`` (``"local"``: a LocalCluster of ``jobs`` processes).

    Unchanged submissions (same student, assignment and notebook hash) keep their stored row
    unless ``force``; the late rule is applied to them again without running anything. Each
    row is stored as soon as its submission is graded.
    """
    wanted = list(assignments) or gradable(course)
    for assignment in wanted:
        course.assignment(assignment)  # unknown ids fail here, before any work
        collect(course.hidden_checks(assignment))  # checks without points stop the run here
    _, sandbox_note = use_sandbox(course.limits)  # "required" and unavailable stops here
    seed = new_seed() if seed is None else seed
    notebooks = {a: course.assignment(a).notebook for a in wanted}
    submissions = discover(submissions_root, notebooks, course.timezone)
    report = progress or Progress()
    where = f"on the Dask cluster {scheduler}" if scheduler else f"{jobs} at a time"
    report.note(f"{len(submissions)} submission(s), seed {seed}, {where}; {sandbox_note}")
    done: dict[int, Graded] = {}
    todo: list[tuple[int, Submission]] = []
    for index, sub in enumerate(submissions):
        stored = book.get(sub.student, sub.assignment, sub.sha256) if sub.sha256 else None
        if stored is not None and not force:
            row = _rescored(stored, sub, course)
            if row != stored:
                book.put(row)
            done[index] = Graded(sub, row, skipped=True)
            report.finished(done[index])
        else:
            todo.append((index, sub))
    def store(task: Task, row: GradeRow) -> None:
        index, sub = task
        book.put(row)
        done[index] = Graded(sub, row, skipped=False)
        report.finished(done[index])

    # by assignment: a worker keeps one session of checks while it grades the same homework
    todo.sort(key=lambda task: (task[1].assignment, task[0]))
    report.planned(len(todo))
    if scheduler is not None:
        from grader.cluster import grade_on_cluster

        grade_on_cluster(todo, course, seed, scheduler, jobs,
                         lambda task: report.started(task[1]), store, report.note)
    elif jobs <= 1 or len(todo) <= 1:
        grade_stream(course, seed, _announced(todo, report), store)
    else:
        from grader.pool import grade_in_workers

        grade_in_workers(todo, course, seed, jobs,
                         lambda task: report.started(task[1]), store)
    return [done[i] for i in sorted(done)]


def _announced(todo: Sequence[Task], report: Progress) -> Iterator[Task]:
    for task in todo:
        report.started(task[1])
        yield task


def _rescored(stored: GradeRow, sub: Submission, course: Course) -> GradeRow:
    # The check results stand; the submission time, an extension or a course rule may have
    # changed since, so the late rule is applied again (cheap, nothing runs).
    return dataclasses.replace(stored, path=str(sub.path),
                               **_late_fields(stored.check_results, sub, course))
