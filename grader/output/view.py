"""One view of a gradebook row: everything a person reads about one graded submission.

Every text in a view that a submission controls (the student's id, the detail, the cell errors,
the checks' messages) is bounded and inert (``grader.text``), whatever the gradebook holds.

``view`` turns a ``GradeRow`` (and the course: the homework's title, the late policy, the time
zone) into a ``RowView``; the Markdown and HTML feedback, the report and Gradescope's
``results.json`` render from it and from nothing else, so a status or a sentence added here
appears in all of them. The rules of how rows are shown live here too: which row counts for a
student (``counted_rows``), the status shown (``display_status``), the words for each status,
and how the marks of written answers join the checks' points (``with_written``: every output
shows a row only after it went through it).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from grader.course.config import Course
from grader.course.notebook import defined_names
from grader.course.questions import Question
from grader.course.rules import LatePolicy, final_score
from grader.errors import ConfigError
from grader.records import (
    Answer,
    AppliedItem,
    CheckResult,
    GradeRow,
    Mark,
    Outcome,
    QuestionMark,
    Status,
)
from grader.text import DETAIL_CHARS, NAME_CHARS, one_line, text_block

# What each status means, for the student whose notebook it describes.
STATUS_WORDS: dict[Status, str] = {
    Status.OK: "Your notebook ran from the first cell to the last without an error.",
    Status.CELL_ERROR: "At least one cell raised an error. The cells after it still ran, and "
                       "the checks called what your notebook had defined.",
    Status.CELL_TIMEOUT: "A cell ran past the time limit for one cell and was interrupted; the "
                         "cells after it still ran, and the checks called what your notebook "
                         "had defined.",
    Status.NOTEBOOK_TIMEOUT: "The notebook ran past the time limit for the whole notebook and "
                             "was stopped, so the checks could not call it.",
    Status.KERNEL_DIED: "The Python process running your notebook stopped (a crash, or more "
                        "memory than allowed), so the checks could not call it.",
    Status.KERNEL_LOST: "Your notebook ran, but the Python process running it stopped, ran out "
                        "of memory or stopped answering while the checks were calling it; the "
                        "checks left failed.",
    Status.CHECKS_TIMEOUT: "Your notebook ran, but the checks ran past the time allowed for all "
                           "of them together (a function that is very slow, or never returns); "
                           "the checks left failed without running.",
    Status.MALFORMED: "The file could not be read as a notebook, so nothing of it could run.",
    Status.GRADER_ERROR: "The grader itself failed on your submission. This is not your fault; "
                         "your instructor sees it in the report and will grade it again.",
    Status.TIME_UNKNOWN: "Your notebook ran to the end, but the time you handed it in is not "
                         "known, so your final score waits for your instructor.",
    Status.MISSING: "Nothing was handed in for this homework.",
    Status.MARKING_PENDING: "Your notebook ran to the end, but a person has not marked all "
                            "of your written answers yet, so your final score waits for them.",
}


def counted_rows(rows: Iterable[GradeRow], policy: str = "latest"
                 ) -> dict[tuple[str, str], GradeRow]:
    """The row that counts for each (student, assignment). ``latest``: the last submission
    (by submission time, then grading time; unknown times sort first). ``best``: the highest
    final, a known final beating an unknown one, ties going to the later submission."""
    counted: dict[tuple[str, str], GradeRow] = {}
    for row in sorted(rows, key=_submission_order):
        key = (row.student, row.assignment)
        held = counted.get(key)
        if policy == "best" and held is not None and _final_rank(held) > _final_rank(row):
            continue
        counted[key] = row
    return counted


def _final_rank(row: GradeRow) -> tuple[bool, float]:
    return (row.final is not None, row.final or 0.0)


def _submission_order(row: GradeRow) -> tuple[bool, dt.datetime, str]:
    # compare instants, not ISO text: offsets differ between timestamp files
    if row.submitted_at is None:
        return (False, dt.datetime.min.replace(tzinfo=dt.UTC), row.graded_at)
    return (True, dt.datetime.fromisoformat(row.submitted_at), row.graded_at)


def display_status(row: GradeRow) -> Status:
    """The status shown for a row: its own, or ``time_unknown`` when the notebook ran cleanly
    but its submission time is unknown (its final waits for the instructor). Any trouble
    running the notebook is shown first; the empty final tells the time is unknown."""
    if row.submitted_at is None and row.status is Status.OK:
        return Status.TIME_UNKNOWN
    if row.marking_pending and row.status is Status.OK:
        return Status.MARKING_PENDING
    return row.status


# -- written answers ----------------------------------------------------------------------------

NOT_COLLECTED = "not collected yet: `grader grade` reads the answers from the submitted file"


def question_marks(questions: Iterable[Question], answers: Mapping[str, Answer] | None,
                   marks: Mapping[tuple[str, str], Mark]) -> tuple[QuestionMark, ...]:
    """Each question of a submission as marked: ``answers`` are its answers by question
    (None: not read yet), ``marks`` the marks by (question, answer hash). An answer no one has
    marked has no points yet (``earned`` None), except a missing one: 0, flagged. A mark's
    points are its own when given directly, else the rubric's for its items (rubric items
    since removed count nothing, and are flagged)."""
    found = []
    for q in questions:
        answer = None if answers is None else answers.get(q.id)
        if answer is None:
            found.append(QuestionMark(q.id, q.title, q.points, None, flag=NOT_COLLECTED))
            continue
        mark = marks.get((q.id, answer.sha256))
        if mark is None:
            found.append(QuestionMark(q.id, q.title, q.points, 0.0 if answer.missing else None,
                                      flag=answer.flag, missing=answer.missing))
            continue
        known = tuple(i for i in mark.items if any(item.id == i for item in q.items))
        gone = [i for i in mark.items if i not in known]
        flag = "; ".join([answer.flag] * bool(answer.flag) +
                         [f"rubric item(s) {', '.join(gone)} no longer exist"] * bool(gone))
        items = tuple(AppliedItem(i, q.item(i).points, q.item(i).text) for i in known)
        earned = q.points_for(known) if mark.points is None else mark.points
        found.append(QuestionMark(q.id, q.title, q.points, earned, items, mark.comment, flag,
                                  answer.missing, mark.points is not None, mark.marker,
                                  mark.marked_at))
    return tuple(found)


def checks_points(row: GradeRow) -> tuple[float, float]:
    """(earned, possible) of the checks alone, whether or not ``row`` holds its marks."""
    return (round(row.earned - sum(m.earned or 0.0 for m in row.written), 4),
            row.possible - sum(m.points for m in row.written))


def with_written(row: GradeRow, written: tuple[QuestionMark, ...],
                 policy: LatePolicy) -> GradeRow:
    """``row`` with its written questions: its points are the checks' plus the marks, its raw
    percent of both, the late cap on that total, and its final pending (None) until every
    question is marked (and while the checks' own final is pending: an unknown submission
    time, a grader error to grade again). The one place where marks join the
    checks: the CSVs, the feedback, the report and the pass rule read rows made here."""
    if not written:
        return row
    checks_earned, checks_possible = checks_points(row)
    earned = checks_earned + sum(m.earned or 0.0 for m in written)
    possible = checks_possible + sum(m.points for m in written)
    raw = round(100.0 * earned / possible, 2) if possible else 0.0
    pending = any(m.earned is None for m in written)
    known = row.cap is not None and row.status is not Status.GRADER_ERROR  # as the checks' own
    final = round(final_score(raw, row.cap, policy) or 0.0, 2) \
        if known and not pending and row.cap is not None else None
    return dataclasses.replace(row, earned=round(earned, 4), possible=possible, raw=raw,
                               final=final, written=written)


def cap_words(row: GradeRow, policy: LatePolicy) -> str:
    """How the final score follows from the raw score and the late cap, in words."""
    if row.status is Status.GRADER_ERROR:
        return (f"{row.late_reason} Your final score waits until your instructor has graded "
                f"this submission again.")
    if row.cap is None:
        return (f"{row.late_reason} Your final score is pending until your instructor knows "
                f"when you handed in; the checks gave {row.raw:.2f} %.")
    if row.final is None:
        return (f"{row.late_reason} Your final score is pending until every written answer is "
                f"marked; so far {row.raw:.2f} %, capped at {row.cap:g} %.")
    if policy is LatePolicy.SCALE:
        rule = f"raw {row.raw:.2f} % × cap {row.cap:g} % / 100"
    else:
        rule = f"the smaller of raw {row.raw:.2f} % and cap {row.cap:g} %"
    return f"{row.late_reason} Final score = {rule} = {row.final:.2f} %."


def cell_error_lines(row: GradeRow) -> tuple[str, ...]:
    """Every cell error kept with ``row``, one line each, then how many more there were."""
    more = (f"... and {row.more_cell_errors} more",) if row.more_cell_errors else ()
    return tuple(one_line(str(e)) for e in row.cell_errors) + more


def _final_words(row: GradeRow) -> str:
    if row.final is not None:
        return f"{row.final:.2f} %"
    if row.status is Status.GRADER_ERROR:
        return "pending (the grader failed; your instructor grades it again)"
    if row.cap is None:
        return "pending (submission time unknown)"
    return "pending (written answers not marked yet)"


def in_notebook_order(checks: Iterable[CheckResult], course: Course, assignment: str
                       ) -> list[CheckResult]:
    """The checks grouped by the student's function they check, in the order the homework's
    notebook defines them (checks of no known function last), each group by check name."""
    try:
        order = {name: i for i, name in
                 enumerate(defined_names(course.student_notebook(assignment)))}
    except ConfigError:  # a homework the course no longer has
        order = {}
    return sorted(checks, key=lambda c: (c.task not in order, order.get(c.task, 0), c.task,
                                         c.name))


def local_time(iso: str | None, course: Course) -> str:
    """An ISO 8601 instant as the course's clock shows it, the zone named
    (``2026-12-01 14:03 Europe/Moscow``); ``unknown`` for None."""
    if iso is None:
        return "unknown"
    moment = dt.datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return f"{moment.astimezone(course.timezone):%Y-%m-%d %H:%M} {course.timezone.key}"


@dataclass(frozen=True)
class CheckView:
    """One check as a student reads it: what it tests, its points, and what went wrong."""

    name: str  # file stem::function, for the instructor
    title: str  # what the check tests, in words
    task: str  # the student's function it checks ("" when not known)
    points: float
    earned: float
    passed: bool  # with all its points
    outcome: str  # "passed", "partial" (a challenge's share of its points), "failed", "error"
    message: str  # empty when passed with all its points


@dataclass(frozen=True)
class RowView:
    """What a person reads about one graded submission. Percents are 0..100; times are the
    course's local times with the zone named."""

    student: str
    assignment: str
    title: str  # the homework's title
    status: Status  # as shown (``display_status``)
    status_words: str
    detail: str
    earned: float
    possible: float
    raw: float
    cap: float | None
    final: float | None
    final_words: str  # "87.50 %", or why it is pending
    cap_words: str
    cell_errors: tuple[str, ...]
    checks: tuple[CheckView, ...]
    submitted_at: str
    graded_at: str
    seconds: float
    checks_earned: float = 0.0  # the checks' own points (``earned`` counts the marks too)
    checks_possible: float = 0.0
    written: tuple[QuestionMark, ...] = ()  # each written question with its mark
    leaderboard_name: str = ""  # the student's pseudonym on the class's leaderboard, if any

    @property
    def marking_pending(self) -> bool:
        return any(m.earned is None for m in self.written)

    @property
    def groups(self) -> tuple[tuple[str, tuple[CheckView, ...]], ...]:
        """The checks by the function they check, in the notebook's order: (the function's name,
        or "" for checks of no known function, last; its checks)."""
        found: list[tuple[str, list[CheckView]]] = []
        for check in self.checks:
            if not found or found[-1][0] != check.task:
                found.append((check.task, []))
            found[-1][1].append(check)
        return tuple((task, tuple(checks)) for task, checks in found)

    @property
    def ran_cleanly(self) -> bool:
        """Whether the notebook ran to the end with no trouble (no detail worth showing)."""
        return self.status in (Status.OK, Status.TIME_UNKNOWN)


def public_name(salt: str, student: str) -> str:
    """The pseudonym of ``student`` on pages shown to the class (``grader report --public``):
    stable for a gradebook, and made with its secret ``salt``
    (``grader.pipeline.store.Gradebook.public_salt``), so that no student can work out whose
    a pseudonym is from the ids they know."""
    return "player " + hashlib.sha256(f"{salt}/{student}".encode()).hexdigest()[:6]


def _check_view(c: CheckResult) -> CheckView:
    whole = c.outcome is Outcome.PASSED and c.earned >= c.points
    outcome = "partial" if c.outcome is Outcome.PASSED and not whole else c.outcome.value
    return CheckView(c.name, one_line(c.title or c.name, DETAIL_CHARS), c.task, c.points,
                     c.earned, whole, outcome, "" if whole else text_block(c.message))


def view(row: GradeRow, course: Course, salt: str = "") -> RowView:
    """The view of ``row`` under ``course``'s rules; with the gradebook's ``salt``, a row with
    a challenge names the student's pseudonym on the class's leaderboard."""
    titles = {a.id: a.title for a in course.assignments}
    status = display_status(row)
    return RowView(
        student=one_line(row.student, NAME_CHARS), assignment=row.assignment,
        title=titles.get(row.assignment, row.assignment), status=status,
        status_words=STATUS_WORDS[status], detail=one_line(row.detail, DETAIL_CHARS),
        earned=row.earned, possible=row.possible, raw=row.raw, cap=row.cap, final=row.final,
        final_words=_final_words(row),
        cap_words=cap_words(row, course.late_policy), cell_errors=cell_error_lines(row),
        checks=tuple(_check_view(c) for c in in_notebook_order(row.checks, course,
                                                                 row.assignment)),
        submitted_at=local_time(row.submitted_at, course),
        graded_at=local_time(row.graded_at, course), seconds=row.seconds,
        checks_earned=checks_points(row)[0], checks_possible=checks_points(row)[1],
        written=row.written,
        leaderboard_name=public_name(salt, row.student)
        if salt and any(c.challenge is not None for c in row.checks) else "")
