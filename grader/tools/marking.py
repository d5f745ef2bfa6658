"""Marking written answers: what ``grader mark`` (the page) and ``grader marks`` (the
spreadsheet) share.

- ``scored_rows``: the gradebook's rows, each with its written questions and their marks
  joined by ``grader.output.view.with_written``: what every output shows.
- ``queue``: the answers of one question to mark, one per student (the submission that
  counts), in a stable shuffled order, with their marks and a pseudonym for each student.
- ``mark_answer``: a mark checked against the rubric, then saved (a save based on an
  out-of-date version is refused).
- ``set_item_points``: a rubric item's points changed in ``solutions/<hw>/rubric.toml``
  (its comments and layout kept); every answer that used it is rescored, since marks keep
  the items, not their points.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from grader.course.config import Course
from grader.course.questions import Question, load_questions, rubric_path
from grader.errors import ConfigError, MarkingError
from grader.output.files import write_text_atomic
from grader.output.view import counted_rows, question_marks, with_written
from grader.pipeline import written
from grader.pipeline.store import Gradebook
from grader.pipeline.written import AnswerKey, NewMark
from grader.records import Answer, GradeRow, Mark, QuestionMark
from grader.text import COMMENT_CHARS, LINE_CHARS, clip

# The questions of each homework, read again only when the reference notebook or the rubric
# changes (the page asks for them on every request).
_CACHE: dict[tuple[Path, str], tuple[tuple[int, ...], tuple[Question, ...]]] = {}
_CACHE_LOCK = threading.Lock()
_RUBRIC_LOCK = threading.Lock()


def _stamp(paths: Iterable[Path]) -> tuple[int, ...]:
    found: list[int] = []
    for p in paths:
        info = p.stat() if p.exists() else None
        found += [-1] * 3 if info is None else [info.st_mtime_ns, info.st_size, info.st_ino]
    return tuple(found)


def questions_of(course: Course, assignment: str) -> tuple[Question, ...]:
    """The written questions of ``assignment`` (``load_questions``, cached by file times)."""
    paths = (course.reference_notebook(assignment), rubric_path(course, assignment))
    stamp = _stamp(paths)
    with _CACHE_LOCK:
        cached = _CACHE.get((course.path, assignment))
        if cached is not None and cached[0] == stamp:
            return cached[1]
    found = load_questions(course, assignment)
    with _CACHE_LOCK:
        _CACHE[(course.path, assignment)] = (stamp, found)
    return found


def all_questions(course: Course) -> dict[str, tuple[Question, ...]]:
    """The homeworks that ask written questions, with their questions."""
    return {a.id: qs for a in course.assignments if (qs := questions_of(course, a.id))}


def question(course: Course, assignment: str, question_id: str) -> Question:
    course.assignment(assignment)  # an unknown homework is a ConfigError naming course.toml
    for q in questions_of(course, assignment):
        if q.id == question_id:
            return q
    raise MarkingError(f"{assignment} has no written question {question_id!r} (known: "
                       f"{', '.join(q.id for q in questions_of(course, assignment)) or 'none'})")


def scored_rows(book: Gradebook, course: Course) -> list[GradeRow]:
    """Every row of the gradebook, its written questions and their marks joined to it."""
    rows = book.rows()
    asked = all_questions(course)
    if not asked:
        return rows
    answers = written.answers(book)
    by_student: dict[tuple[str, str], dict[tuple[str, str], Mark]] = defaultdict(dict)
    for (student, assignment, q, sha), m in written.marks(book).items():
        by_student[(student, assignment)][(q, sha)] = m
    return [with_written(r, question_marks(asked[r.assignment],
                                           answers.get((r.student, r.assignment, r.sha256)),
                                           by_student[(r.student, r.assignment)]),
                         course.late_policy) if r.assignment in asked else r
            for r in rows]


def pseudonym(assignment: str, student: str) -> str:
    """A stable name that hides the student (names are hidden while marking by default)."""
    return "student " + hashlib.sha256(f"{assignment}/{student}".encode()).hexdigest()[:6]


@dataclass(frozen=True)
class Entry:
    """One answer in a question's queue: whose it is, the answer, its mark (None: not
    marked) and its points as the rubric now says (None: not marked)."""

    key: AnswerKey
    student: str
    pseudonym: str
    answer: Answer
    mark: Mark | None
    marked: QuestionMark

    @property
    def to_mark(self) -> bool:
        return self.mark is None and not self.answer.missing


def queue(book: Gradebook, course: Course, assignment: str, question_id: str,
          rows: Sequence[GradeRow] | None = None) -> list[Entry]:
    """The answers of one question, one per student (the submission that counts), in a
    stable shuffled order: by a hash of the homework, the question and the student, so every
    marker and every restart sees the same order, and no order of names or of submission."""
    q = question(course, assignment, question_id)
    rows = scored_rows(book, course) if rows is None else rows
    answers = written.answers(book)
    marks = written.marks(book)
    found = []
    for (student, hw), row in counted_rows(rows, course.counted).items():
        if hw != assignment:
            continue
        answer = answers.get((student, hw, row.sha256), {}).get(q.id)
        if answer is None:
            continue  # not read yet: `grader grade` reads it
        key = (student, hw, q.id, answer.sha256)
        marked = next(m for m in row.written if m.question == q.id)
        found.append(Entry(key, student, pseudonym(hw, student), answer, marks.get(key),
                           marked))
    found.sort(key=lambda e: hashlib.sha256(f"{assignment}/{q.id}/{e.student}".encode())
               .hexdigest())
    return found


@dataclass(frozen=True)
class Progress:
    """How far marking one question has got."""

    question: Question
    answers: int  # students with an answer read (one per student)
    marked: int  # of those, marked by a person
    missing: int  # no answer (0 points, unless someone marks them)
    left: int  # still to mark

    @property
    def done(self) -> bool:
        return self.left == 0


def progress(entries: Sequence[Entry], q: Question) -> Progress:
    return Progress(q, len(entries), sum(e.mark is not None for e in entries),
                    sum(e.answer.missing and e.mark is None for e in entries),
                    sum(e.to_mark for e in entries))


def checked_mark(course: Course, key: AnswerKey, items: Iterable[str], points: float | None,
                 comment: str, based_on: int) -> NewMark:
    """A mark of the answer ``key``, checked against the question's rubric (MarkingError
    naming what is wrong: an unknown item, points out of range); items in rubric order."""
    _, assignment, question_id, _ = key
    q = question(course, assignment, question_id)
    chosen = set(items)
    unknown = sorted(chosen - {i.id for i in q.items})
    if unknown:
        raise MarkingError(f"{assignment} {q.id}: no rubric item {', '.join(unknown)} "
                           f"(known: {', '.join(i.id for i in q.items)})")
    if points is not None and (math.isnan(points) or not 0.0 <= points <= q.points):
        raise MarkingError(f"{assignment} {q.id}: points must be within 0..{q.points:g}, got "
                           f"{points:g}")
    return NewMark(key, tuple(i.id for i in q.items if i.id in chosen), points,
                   clip(comment.strip().replace("\r\n", "\n"), COMMENT_CHARS), based_on)


def mark_answer(book: Gradebook, course: Course, key: AnswerKey, items: Iterable[str],
                points: float | None, comment: str, marker: str, based_on: int) -> Mark:
    """Check and save one mark (StaleMark when someone saved it since ``based_on``)."""
    if written.answer(book, key) is None:
        raise MarkingError(f"no answer {key[3][:12]} of {key[0]} to {key[1]} {key[2]} in the "
                           f"gradebook")
    new = checked_mark(course, key, items, points, comment, based_on)
    [saved] = written.save_marks(book, [new], clip(marker, LINE_CHARS))
    return saved


def set_item_points(book: Gradebook, course: Course, assignment: str, question_id: str,
                    item_id: str, seen: float, points: float, marker: str) -> Question:
    """Give the rubric item ``item_id`` of a question ``points`` in the rubric file (its
    comments and layout kept) and log who did it. ``seen``: the points the marker saw;
    when the file says otherwise, someone changed it since, and nothing is written. Every
    mark that applies the item is rescored from here on (marks keep items, not points)."""
    import tomlkit  # the optional "mark" extra, with the page

    q = question(course, assignment, question_id)
    if not any(i.id == item_id for i in q.items):
        raise MarkingError(f"{assignment} {q.id}: no rubric item {item_id!r}")
    if not math.isfinite(points):
        raise MarkingError(f"{assignment} {q.id} {item_id}: points must be a number")
    path = rubric_path(course, assignment)
    with _RUBRIC_LOCK:
        old_text = path.read_text(encoding="utf-8")
        doc = tomlkit.parse(old_text)
        entry = doc["question"][q.id]["items"][item_id]
        current = float(entry["points"])
        if current != seen:
            raise MarkingError(f"{path}: question.{q.id}.items.{item_id}.points is "
                               f"{current:g} now, not {seen:g}: someone changed it since you "
                               f"opened the page; nothing was written")
        entry["points"] = int(points) if points.is_integer() else points
        write_text_atomic(path, tomlkit.dumps(doc))
        try:
            changed = question(course, assignment, question_id)
        except ConfigError as exc:
            write_text_atomic(path, old_text)  # the rubric as it was: the change broke it
            raise MarkingError(f"the change was not kept: {exc}") from None
    written.log(book, clip(marker, LINE_CHARS), "rubric", ("", assignment, q.id, ""),
                f"item {item_id}: points {current:g} -> {points:g}")
    return changed
