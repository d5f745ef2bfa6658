"""The grading run: discover -> grade (execute, check, score) -> store, for a folder of
submissions.

Unchanged submissions keep their stored row (the late rule applied again); the rest are graded
in this process or in worker processes (``grader.pipeline.pool``), and each row is stored as
soon as it is ready, by this process alone. A failure inside one submission becomes that
submission's status and the batch goes on; only problems of the course itself (bad
course.toml, checks without points) stop a run, and they stop it before any notebook is
executed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from grader.course.config import Course
from grader.course.questions import Question, load_questions, no_answer, read_answers
from grader.kernel import zygote
from grader.kernel.sandbox import use_sandbox
from grader.pipeline.discover import discover
from grader.pipeline.store import Gradebook
from grader.pipeline.written import has_answers, store_answers
from grader.records import GradeRow, Status, Submission, Task

# The engine (torch, pytest, nbclient: grader.pipeline.grading, checking, pool) is imported
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
    # a broken rubric stops the run here too; the answers are read in this process, as data
    asked = {assignment: load_questions(course, assignment) for assignment in wanted}
    sandboxed, sandbox_note = use_sandbox(course.limits)  # "required" and unavailable stops here
    notebooks = {a: course.assignment(a).notebook for a in wanted}
    submissions = discover(submissions_root, notebooks, course.timezone)  # a missing folder
    stored = [_kept(book, sub) if sub.sha256 and not force else None for sub in submissions]
    todo = [Task(i, sub) for i, sub in enumerate(submissions) if stored[i] is None]
    if todo and scheduler is None:
        # the kernels' fork server (and the workers' parent) import while this process does
        zygote.start(sandboxed)
        if jobs > 1 and len(todo) > 1:
            from grader.pipeline.pool import start_workers_early

            start_workers_early()
    from grader.pipeline.checking import collect
    from grader.pipeline.grading import grade_stream, new_seed

    seed = new_seed() if seed is None else seed
    present = {sub.assignment for sub in submissions}
    for assignment in (a for a in wanted if a in present):
        collect(course.hidden_checks(assignment))  # checks without points stop the run here
    run = _Run(book, progress or Progress(), asked)
    where = f"on the Dask cluster {scheduler}" if scheduler else f"{jobs} at a time"
    run.note(f"{len(submissions)} submission(s), seed {seed}, {where}; {sandbox_note}")
    for index, (sub, kept) in enumerate(zip(submissions, stored, strict=True)):
        if kept is not None:
            run.kept(index, sub, _rescored(kept, sub, course), changed=kept)

    # by assignment: a worker keeps one session of checks while it grades the same homework
    todo.sort(key=lambda task: (task.submission.assignment, task.index))
    run.progress.planned(len(todo))
    if scheduler is not None:
        from grader.pipeline.cluster import grade_on_cluster  # dask: the optional "cluster" extra

        grade_on_cluster(todo, course, seed, scheduler, jobs, run)
    elif jobs <= 1 or len(todo) <= 1:
        grade_stream(course, seed, _announced(todo, run), run.done)
    else:
        from grader.pipeline.pool import grade_in_workers

        grade_in_workers(todo, course, seed, jobs, run)
    return [run.graded[i] for i in sorted(run.graded)]


class _Run:
    """One grading run as its drivers see it: it stores each row as it comes (this process is
    the gradebook's one writer) and tells ``progress``."""

    def __init__(self, book: Gradebook, progress: Progress,
                 asked: dict[str, tuple[Question, ...]] | None = None) -> None:
        self.book, self.progress = book, progress
        self.asked = asked or {}
        self.graded: dict[int, Graded] = {}

    def note(self, text: str) -> None:
        self.progress.note(text)

    def started(self, task: Task) -> None:
        self.progress.started(task.submission)

    def done(self, task: Task, row: GradeRow) -> None:
        self.book.put(row)
        self._store_answers(task.submission, row, replace=True)
        self.graded[task.index] = Graded(task.submission, row, skipped=False)
        self.progress.finished(self.graded[task.index])

    def kept(self, index: int, sub: Submission, row: GradeRow, changed: GradeRow) -> None:
        """A stored row kept (unchanged submission), stored again if rescoring ``changed`` it."""
        if row != changed:
            self.book.put(row)
        self._store_answers(sub, row, replace=False)
        self.graded[index] = Graded(sub, row, skipped=True)
        self.progress.finished(self.graded[index])


    def _store_answers(self, sub: Submission, row: GradeRow, replace: bool) -> None:
        """Read the written answers of ``sub`` from its file (never by running it) and keep
        them; a kept row's answers are read only if they are not stored yet."""
        questions = self.asked.get(sub.assignment, ())
        key = (row.student, row.assignment, row.sha256)
        if not questions or (not replace and has_answers(self.book, key)):
            return
        answers = read_answers(sub.path, questions) if not sub.problem else tuple(
            no_answer(q, sub.problem) for q in questions)
        store_answers(self.book, key, answers)


def _announced(todo: Sequence[Task], run: _Run) -> Iterator[Task]:
    for task in todo:
        run.started(task)
        yield task


def _kept(book: Gradebook, sub: Submission) -> GradeRow | None:
    """The stored row of an unchanged submission, to keep; none for a row the grader failed on
    (graded again: a grader error is never the submission's result)."""
    row = book.get(sub.student, sub.assignment, sub.sha256)
    return None if row is None or row.status is Status.GRADER_ERROR else row


def _rescored(stored: GradeRow, sub: Submission, course: Course) -> GradeRow:
    from grader.pipeline.grading import late_fields

    # The check results stand; the submission time, an extension or a course rule may have
    # changed since, so the late rule is applied again (cheap, nothing runs).
    return dataclasses.replace(stored, path=str(sub.path),
                               **late_fields(stored.checks, sub, course))
