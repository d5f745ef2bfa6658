"""``grader marks export`` / ``import``: marking written answers offline, in a spreadsheet.

The export has one row per student and question (the submission that counts), with the mark
as it stands and the answer to read:

    student, assignment, question, points, items, comment,
    answer_sha256, version, possible, rubric, flag, answer

Fill in ``items`` (rubric item ids, separated by spaces or commas) or ``points`` (given
directly), and ``comment``; leave the rest as it is. The import checks every row before it
stores anything: an unknown homework, question, student or rubric item, points out of range,
both points and items, a row given twice, an answer that changed since the export (a
resubmission) or a mark saved since (in the page, or by another import) is an error naming the
file and the line, and then nothing is stored. Rows left empty, or as exported, change nothing.
The rest is saved in one transaction, with the importing marker's name and the time.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from grader.course.config import Course, csv_rows
from grader.errors import MarkingError, StaleMark
from grader.output.files import write_text_atomic
from grader.pipeline import written
from grader.pipeline.store import Gradebook
from grader.pipeline.written import NewMark
from grader.text import LINE_CHARS, clip
from grader.tools import marking

COLUMNS = ["student", "assignment", "question", "points", "items", "comment", "answer_sha256",
           "version", "possible", "rubric", "flag", "answer"]
NEEDED = ("student", "assignment", "question", "points", "items", "comment", "answer_sha256",
          "version")
_SPLIT = re.compile(r"[\s,;]+")
_FORMULA = ("=", "+", "-", "@")
_GUARDED = re.compile(r"^'(?=\s*[=+\-@])")  # the apostrophe put before a formula
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
SHOWN_ERRORS = 30


def export_marks(book: Gradebook, course: Course, path: Path,
                 assignments: Sequence[str] = ()) -> int:
    """Write the marks sheet of ``assignments`` (default: every homework that asks written
    questions) to ``path``; return its number of rows."""
    asked = marking.all_questions(course)
    for a in assignments:
        course.assignment(a)
    rows = marking.scored_rows(book, course)
    records = []
    for hw, questions in sorted(asked.items()):
        if assignments and hw not in assignments:
            continue
        for q in questions:
            rubric = "; ".join(f"{i.id} {i.points:+g}" for i in q.items)
            for e in sorted(marking.queue(book, course, hw, q.id, rows), key=lambda e: e.student):
                mark = e.mark
                records.append({
                    "student": e.student, "assignment": hw, "question": q.id,
                    "points": None if mark is None else mark.points,
                    "items": "" if mark is None else " ".join(mark.items),
                    "comment": "" if mark is None else mark.comment,
                    "answer_sha256": e.answer.sha256, "version": 0 if mark is None
                    else mark.version, "possible": q.points, "rubric": rubric,
                    "flag": e.answer.flag, "answer": e.answer.text})
    frame = pd.DataFrame.from_records(records, columns=COLUMNS).map(_cell)
    write_text_atomic(path, frame.to_csv(index=False, float_format="%.2f", lineterminator="\n"))
    return len(records)


def _cell(value: object) -> object:
    """A sheet's cell: a text keeps its lines (an answer, a comment: quoted, RFC 4180), other
    control characters shown as U+FFFD, and an apostrophe before a formula (``= + - @``, after
    any blanks), which the import takes off again."""
    if not isinstance(value, str):
        return value
    text = _CONTROLS.sub("\ufffd", value.replace("\r\n", "\n").replace("\r", "\n"))
    return "'" + text if text.lstrip().startswith(_FORMULA) else text


@dataclass(frozen=True)
class Imported:
    """What an import did."""

    saved: int
    unchanged: int  # rows empty or as they stand in the gradebook


def _unguard(text: str) -> str:
    return _GUARDED.sub("", text).strip()


def _row_mark(course: Course, entries: dict[tuple[str, str, str], marking.Entry],
              row: dict[str, str]) -> NewMark | None:
    """The mark a row asks for (None: nothing to change); MarkingError says what is wrong."""
    student, hw, qid = (_unguard(row[k]) for k in ("student", "assignment", "question"))
    q = marking.question(course, hw, qid)  # unknown homework or question
    entry = entries.get((student, hw, q.id))
    if entry is None:
        raise MarkingError(f"unknown student {student!r}: no answer of theirs to {hw} {q.id} "
                           f"in the gradebook")
    if row["answer_sha256"].strip() != entry.answer.sha256:
        raise MarkingError(f"{student}'s answer to {hw} {q.id} changed since the export (a "
                           f"new submission); export again and mark the new answer")
    current = entry.mark
    version = 0 if current is None else current.version
    items = tuple(i for i in _SPLIT.split(_unguard(row["items"])) if i)
    text = _unguard(row["points"])
    try:
        points = float(text) if text else None
    except ValueError:
        raise MarkingError(f"points: not a number: {text!r}") from None
    if points is not None and items:
        raise MarkingError("give points or rubric items, not both")
    comment = _unguard(row["comment"])
    if points is None and not items:
        if comment or current is not None:
            raise MarkingError("no points and no rubric items: give one of them")
        return None  # a row left empty: not marked yet
    new = marking.checked_mark(course, entry.key, items, points, comment, version)
    if current is not None and (current.items, current.points, current.comment) == \
            (new.items, new.points, new.comment):
        return None  # as it stands (the same sheet imported again)
    if row["version"].strip() != str(version):
        who = "" if current is None else f" by {current.marker} at {current.marked_at}"
        raise MarkingError(f"the mark of {student}'s answer to {hw} {q.id} changed since the "
                           f"export (saved{who}); export again")
    return new


def import_marks(book: Gradebook, course: Course, path: Path, marker: str) -> Imported:
    """Check every row of the sheet at ``path``, then store its marks in one transaction as
    ``marker``'s. Any bad row: MarkingError naming the file and every bad line, nothing
    stored."""
    lines = csv_rows(path, NEEDED, MarkingError,
                     hint="(export a sheet with `grader marks export` and fill that in)")
    rows = marking.scored_rows(book, course)
    entries: dict[tuple[str, str, str], marking.Entry] = {}
    for hw, questions in marking.all_questions(course).items():
        for q in questions:
            for e in marking.queue(book, course, hw, q.id, rows):
                entries[(e.student, hw, q.id)] = e
    new: list[NewMark] = []
    seen: dict[tuple[str, ...], int] = {}
    problems: list[str] = []
    for line, row in lines:
        key = tuple(_unguard(row[k]) for k in ("student", "assignment", "question"))
        if key in seen:
            problems.append(f"{path}, line {line}: {' '.join(key)} is given twice (first on "
                            f"line {seen[key]})")
            continue
        seen[key] = line
        try:
            mark = _row_mark(course, entries, row)
        except MarkingError as exc:
            problems.append(f"{path}, line {line}: {exc}")
            continue
        if mark is not None:
            new.append(mark)
    if problems:
        shown = "\n".join(f"  {p}" for p in problems[:SHOWN_ERRORS])
        more = f"\n  ... and {len(problems) - SHOWN_ERRORS} more" \
            if len(problems) > SHOWN_ERRORS else ""
        raise MarkingError(f"{path}: {len(problems)} row(s) cannot be imported; nothing was "
                           f"stored:\n{shown}{more}")
    try:
        written.save_marks(book, new, clip(marker, LINE_CHARS), f"import {path.name}")
    except StaleMark as exc:  # saved in the page while this import was checked
        raise MarkingError(f"{path}: {exc}; nothing was stored, export again") from None
    return Imported(len(new), len(lines) - len(new))
