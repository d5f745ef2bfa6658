"""The grading run: discover -> grade (execute, check, score) -> store, for a folder of
submissions.

Unchanged submissions keep their stored row (the late rule applied again); the rest are graded
in this process or in worker processes (``grader.pool``), and each row is stored as soon as it
is ready, by this process alone. A failure inside one submission becomes that submission's
status and the batch goes on; only problems of the course itself (bad course.toml, checks
without points) stop a run, and they stop it before any notebook is executed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from grader import forkserver
from grader.config import Course
from grader.discover import discover
from grader.records import GradeRow, Submission
from grader.sandbox import use_sandbox
from grader.store import Gradebook

if TYPE_CHECKING:
    from grader.grading import Task

# The engine (torch, pytest, nbclient: grader.grading, grader.check, grader.pool) is imported
# inside grade_all once the kernels' fork server has been started: the two import side by side.


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
    sandboxed, sandbox_note = use_sandbox(course.limits)  # "required" and unavailable stops here
    notebooks = {a: course.assignment(a).notebook for a in wanted}
    submissions = discover(submissions_root, notebooks, course.timezone)  # a missing folder
    stored = [book.get(sub.student, sub.assignment, sub.sha256) if sub.sha256 and not force
              else None for sub in submissions]
    todo: list[tuple[int, Submission]] = [(i, sub) for i, sub in enumerate(submissions)
                                          if stored[i] is None]
    if todo and scheduler is None:
        # the kernels' fork server (and the workers' parent) import while this process does
        forkserver.start(sandboxed)
        if jobs > 1 and len(todo) > 1:
            from grader.pool import start_workers_early

            start_workers_early()
    from grader.check import collect
    from grader.grading import grade_stream, new_seed

    seed = new_seed() if seed is None else seed
    present = {sub.assignment for sub in submissions}
    for assignment in (a for a in wanted if a in present):
        collect(course.hidden_checks(assignment))  # checks without points stop the run here
    report = progress or Progress()
    where = f"on the Dask cluster {scheduler}" if scheduler else f"{jobs} at a time"
    report.note(f"{len(submissions)} submission(s), seed {seed}, {where}; {sandbox_note}")
    done: dict[int, Graded] = {}
    for index, (sub, kept) in enumerate(zip(submissions, stored, strict=True)):
        if kept is not None:
            row = _rescored(kept, sub, course)
            if row != kept:
                book.put(row)
            done[index] = Graded(sub, row, skipped=True)
            report.finished(done[index])

    def store(task: Task, row: GradeRow) -> None:
        index, sub = task
        book.put(row)
        done[index] = Graded(sub, row, skipped=False)
        report.finished(done[index])

    # by assignment: a worker keeps one session of checks while it grades the same homework
    todo.sort(key=lambda task: (task[1].assignment, task[0]))
    report.planned(len(todo))
    if scheduler is not None:
        from grader.cluster import grade_on_cluster  # dask: the optional "cluster" extra

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
    from grader.grading import late_fields

    # The check results stand; the submission time, an extension or a course rule may have
    # changed since, so the late rule is applied again (cheap, nothing runs).
    return dataclasses.replace(stored, path=str(sub.path),
                               **late_fields(stored.check_results, sub, course))
