"""The grading run: discover -> execute -> check -> score -> store, one submission at a time.

A failure inside one submission becomes that submission's status and the batch goes on; only
problems of the course itself (bad course.toml, checks without points) stop a run, and they stop
it before any notebook is executed.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import random
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import torch

from grader.check import CheckResult, ChecksConfigError, collect, run_checks
from grader.config import Course
from grader.discover import Submission, discover
from grader.execute import ExecStatus, Execution, Limits, execute, use_sandbox
from grader.judge import Judge
from grader.protocol import Student, bridge_source
from grader.score import Deadlines, score
from grader.store import Gradebook, GradeRow

BRIDGE_SOURCE = bridge_source()


@dataclass(frozen=True)
class Graded:
    """What a run did with one submission: the stored row, and whether it was regraded."""

    submission: Submission
    row: GradeRow
    skipped: bool  # unchanged since the stored row, not graded again


Progress = Callable[[str, Submission | None, Graded | None], None]


def new_seed() -> int:
    """A fresh per-run seed for the hidden checks' draws (recorded in every row)."""
    return random.SystemRandom().randrange(2**31)


def grade_notebook(notebook: Path, check_dir: Path, limits: Limits, seed: int
                   ) -> tuple[Execution, tuple[CheckResult, ...]]:
    """Execute one notebook and run the checks in ``check_dir`` against its live kernel."""
    torch.set_num_threads(1)  # checks that train or evaluate share the cores with the kernel
    with execute(notebook, limits) as (execution, session):
        student = None
        if session is not None:
            session.send_source(BRIDGE_SOURCE, limits.call_timeout_s)
            student = Student(session.request, limits.call_timeout_s,
                              Judge(session.workdir, limits))
        results = run_checks(check_dir, student, seed,
                             unavailable=f"not run: {execution.status.value}: {execution.detail}")
    return execution, results


def deadlines_for(course: Course, assignment: str, student: str) -> Deadlines:
    """The late-rule inputs for one student's assignment, their extension included."""
    return Deadlines(course.assignment(assignment).lecture_day, course.last_lecture_day,
                     course.timezone, course.deadline_time, course.late_policy,
                     course.extensions.get((student, assignment)))


def _row(sub: Submission, course: Course, execution: Execution,
         results: tuple[CheckResult, ...], seed: int) -> GradeRow:
    s = score(results, sub.submitted_at, deadlines_for(course, sub.assignment, sub.student))
    return GradeRow(
        student=sub.student, assignment=sub.assignment, sha256=sub.sha256, path=str(sub.path),
        submitted_at=None if sub.submitted_at is None else sub.submitted_at.isoformat(),
        time_problem=sub.time_problem, status=execution.status.value, detail=execution.detail,
        earned=s.earned, possible=s.possible, raw=s.raw, cap=s.cap, final=s.final,
        late_reason=s.late_reason if not sub.time_problem
        else f"{s.late_reason} ({sub.time_problem})",
        seed=seed, graded_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        seconds=round(execution.seconds, 2), checks=GradeRow.encode_checks(results))


def grade_submission(sub: Submission, course: Course, seed: int) -> GradeRow:
    """Grade one submission; never raises for anything the submission did."""
    check_dir = course.hidden_checks(sub.assignment)
    start = time.monotonic()
    if sub.problem:
        execution = Execution(ExecStatus.MALFORMED, sub.problem, 0.0, 0)
        results = run_checks(check_dir, None, seed, unavailable=f"not run: {sub.problem}")
        return _row(sub, course, execution, results, seed)
    try:
        execution, results = grade_notebook(sub.path, check_dir, course.limits, seed)
    except ChecksConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - one broken submission must not stop the batch
        detail = f"grader error: {type(exc).__name__}: {exc}"
        execution = Execution(ExecStatus.GRADER_ERROR, detail, time.monotonic() - start, 0)
        results = run_checks(check_dir, None, seed, unavailable="not run: grader error")
        traceback.print_exc()
    return _row(sub, course, execution, results, seed)


def gradable(course: Course) -> list[str]:
    """The assignments that have hidden checks (the default set of a grading run)."""
    return [a.id for a in course.assignments if course.hidden_checks(a.id).is_dir()]


def grade_all(course: Course, submissions_root: Path, book: Gradebook,
              assignments: Sequence[str] = (), force: bool = False, seed: int | None = None,
              progress: Progress | None = None, jobs: int = 1) -> list[Graded]:
    """Grade every submission under ``submissions_root`` into ``book``, ``jobs`` at a time.

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
    report = progress or (lambda *_: None)
    report(f"{len(submissions)} submission(s), seed {seed}, {jobs} at a time; {sandbox_note}",
           None, None)
    done: dict[int, Graded] = {}
    todo: list[tuple[int, Submission]] = []
    for index, sub in enumerate(submissions):
        stored = book.get(sub.student, sub.assignment, sub.sha256) if sub.sha256 else None
        if stored is not None and not force:
            row = _rescored(stored, sub, course)
            if row != stored:
                book.put(row)
            done[index] = Graded(sub, row, skipped=True)
            report("done", sub, done[index])
        else:
            todo.append((index, sub))
    for index, sub, row in _graded(todo, course, seed, jobs, report):
        book.put(row)
        done[index] = Graded(sub, row, skipped=False)
        report("done", sub, done[index])
    return [done[i] for i in sorted(done)]


def _graded(todo: list[tuple[int, Submission]], course: Course, seed: int, jobs: int,
            report: Progress) -> Iterator[tuple[int, Submission, GradeRow]]:
    """Grade ``todo``, in this process or in ``jobs`` worker processes; yield each row as it is
    ready. A worker that dies costs its submission a grader_error row, not the batch."""
    if jobs <= 1:
        for index, sub in todo:
            report("grading", sub, None)
            yield index, sub, grade_submission(sub, course, seed)
        return
    context = multiprocessing.get_context("spawn")  # no fork of a process holding torch
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {pool.submit(grade_submission, sub, course, seed): (index, sub)
                   for index, sub in todo}
        for future in as_completed(futures):
            index, sub = futures[future]
            try:
                row = future.result()
            except ChecksConfigError:
                raise
            except Exception as exc:  # noqa: BLE001 - a dead worker costs one submission
                detail = f"grader error: the worker died: {type(exc).__name__}: {exc}"
                execution = Execution(ExecStatus.GRADER_ERROR, detail, 0.0, 0)
                results = run_checks(course.hidden_checks(sub.assignment), None, seed,
                                     unavailable="not run: grader error")
                row = _row(sub, course, execution, results, seed)
            yield index, sub, row


def _rescored(stored: GradeRow, sub: Submission, course: Course) -> GradeRow:
    # The check results stand; the submission time, an extension or a course rule may have
    # changed since, so the late rule is applied again (cheap, nothing runs).
    fresh = _row(sub, course, Execution(ExecStatus(stored.status), stored.detail,
                                        stored.seconds, 0), stored.check_results, stored.seed)
    return GradeRow(**{**fresh.__dict__, "graded_at": stored.graded_at,
                       "path": stored.path if stored.path == fresh.path else fresh.path})
