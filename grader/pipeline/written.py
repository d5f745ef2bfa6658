"""The written answers in the gradebook: each submission's answers as read from its file, the
marks people give them, the log of who did what and when, and the answers each marker has
open (the tables are made by ``grader.pipeline.store``, schema version 3).

A mark belongs to an answer by the answer's content hash, not to a submission: a resubmission
whose answer is unchanged keeps its mark, a changed one has none and goes back to the queue.
A save carries the version of the mark it was based on; when someone saved in between, it is
refused (``StaleMark``) and logged, so nothing a marker typed is lost. Every write is one
transaction of the gradebook (SQLite, WAL, one writer at a time).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass

from grader.errors import StaleMark
from grader.pipeline.store import Gradebook
from grader.records import Answer, Mark

# (student, assignment, sha256 of the submission)
SubmissionKey = tuple[str, str, str]
# (student, assignment, question, sha256 of the answer)
AnswerKey = tuple[str, str, str, str]

CLAIM_SECONDS = 15 * 60  # an answer opened by a marker is not given to another for this long


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def store_answers(book: Gradebook, key: SubmissionKey, answers: Iterable[Answer]) -> None:
    """Keep ``answers`` as the written answers of the submission ``key`` (replacing any)."""
    with book.transaction():
        book.db.execute("DELETE FROM answers WHERE student = ? AND assignment = ? AND "
                        "sha256 = ?", key)
        book.db.executemany(
            "INSERT INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(*key, a.question, a.text, a.figure, a.sha256, a.flag, int(a.missing))
             for a in answers])


def has_answers(book: Gradebook, key: SubmissionKey) -> bool:
    return book.db.execute("SELECT 1 FROM answers WHERE student = ? AND assignment = ? AND "
                           "sha256 = ? LIMIT 1", key).fetchone() is not None


def answers(book: Gradebook, figures: bool = False
            ) -> dict[SubmissionKey, dict[str, Answer]]:
    """Every stored answer, by submission and question (figures only when asked for)."""
    figure = "figure" if figures else "NULL"
    found: dict[SubmissionKey, dict[str, Answer]] = {}
    for student, assignment, sha, question, text, png, answer_sha, flag, missing in \
            book.db.execute(f"SELECT student, assignment, sha256, question, text, {figure}, "
                            "answer_sha256, flag, missing FROM answers"):
        found.setdefault((student, assignment, sha), {})[question] = Answer(
            question, text, png, answer_sha, flag, bool(missing))
    return found


def _mark(values: tuple[object, ...]) -> Mark:
    student, assignment, question, sha, items, points, comment, marker, at, version = values
    return Mark(str(student), str(assignment), str(question), str(sha),
                tuple(json.loads(str(items))), None if points is None else float(str(points)),
                str(comment), str(marker), str(at), int(str(version)))


_MARK_COLUMNS = ("student, assignment, question, answer_sha256, items, points, comment, "
                 "marker, marked_at, version")


def marks(book: Gradebook) -> dict[AnswerKey, Mark]:
    """Every mark, by the answer it marks."""
    return {(m.student, m.assignment, m.question, m.answer_sha256): m
            for m in map(_mark, book.db.execute(f"SELECT {_MARK_COLUMNS} FROM marks"))}


def mark(book: Gradebook, key: AnswerKey) -> Mark | None:
    row = book.db.execute(f"SELECT {_MARK_COLUMNS} FROM marks WHERE student = ? AND "
                          "assignment = ? AND question = ? AND answer_sha256 = ?",
                          key).fetchone()
    return None if row is None else _mark(row)


@dataclass(frozen=True)
class NewMark:
    """What a marker saves for one answer."""

    key: AnswerKey
    items: tuple[str, ...]
    points: float | None  # given directly; None: from the items
    comment: str
    based_on: int  # the version of the mark the marker saw (0: none)


class _Refused(Exception):
    def __init__(self, new: NewMark, current: Mark | None) -> None:
        self.new, self.current = new, current


def save_marks(book: Gradebook, new: Iterable[NewMark], marker: str, action: str = "mark",
               at: str | None = None) -> list[Mark]:
    """Save ``new`` marks in one transaction. A mark whose ``based_on`` is not the stored
    version is refused with ``StaleMark`` (the whole batch with it), and the refused save is
    logged with what it held, so it is never lost."""
    at = at or now_utc()
    saved: list[Mark] = []
    try:
        with book.transaction():
            for m in new:
                current = mark(book, m.key)
                version = 0 if current is None else current.version
                if version != m.based_on:
                    raise _Refused(m, current)  # rolls the whole batch back
                book.db.execute(f"INSERT OR REPLACE INTO marks ({_MARK_COLUMNS}) VALUES "
                                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                (*m.key, json.dumps(list(m.items)), m.points, m.comment,
                                 marker, at, version + 1))
                _log(book, at, marker, action, m.key, _described(m))
                book.db.execute("DELETE FROM claims WHERE student = ? AND assignment = ? AND "
                                "question = ? AND answer_sha256 = ?", m.key)
                saved.append(Mark(*m.key, m.items, m.points, m.comment, marker, at,
                                  version + 1))
    except _Refused as refused:
        with book.transaction():
            _log(book, at, marker, f"{action} refused (out of date)", refused.new.key,
                 _described(refused.new))
        current = refused.current
        who = "someone" if current is None else f"{current.marker} at {current.marked_at}"
        raise StaleMark(f"{who} saved a mark for this answer after you opened it (version "
                        f"{0 if current is None else current.version}, yours was based on "
                        f"{refused.new.based_on}); yours was not saved, and is kept in the "
                        f"log", current) from None
    return saved


def _described(m: NewMark) -> str:
    return json.dumps({"items": list(m.items), "points": m.points, "comment": m.comment,
                       "based_on": m.based_on}, ensure_ascii=False)


def _log(book: Gradebook, at: str, marker: str, action: str, key: AnswerKey,
         detail: str) -> None:
    book.db.execute("INSERT INTO mark_log (at, marker, action, student, assignment, question, "
                    "answer_sha256, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (at, marker, action, *key, detail))


def log(book: Gradebook, marker: str, action: str, key: AnswerKey, detail: str) -> None:
    """Keep one line of the marking log (a rubric change, say)."""
    with book.transaction():
        _log(book, now_utc(), marker, action, key, detail)


@dataclass(frozen=True)
class LogEntry:
    at: str
    marker: str
    action: str
    key: AnswerKey
    detail: str


def log_entries(book: Gradebook) -> list[LogEntry]:
    """The marking log, oldest first."""
    return [LogEntry(at, marker, action, (s, a, q, h), detail) for at, marker, action, s, a, q,
            h, detail in book.db.execute("SELECT at, marker, action, student, assignment, "
                                         "question, answer_sha256, detail FROM mark_log "
                                         "ORDER BY id")]


def claim_next(book: Gradebook, queue: Iterable[AnswerKey], marker: str,
               now: float, seconds: float = CLAIM_SECONDS) -> AnswerKey | None:
    """The first answer of ``queue`` (in order) that no other marker has open and no one has
    marked, now opened by ``marker``; the marker's own open answer first. None when none is
    left."""
    with book.transaction():
        book.db.execute("DELETE FROM claims WHERE until < ?", (now,))
        held = {tuple(r[:4]): r[4] for r in book.db.execute(
            "SELECT student, assignment, question, answer_sha256, marker FROM claims")}
        marked = {tuple(r) for r in book.db.execute(
            "SELECT student, assignment, question, answer_sha256 FROM marks")}
        free = [key for key in queue if key not in marked and held.get(key, marker) == marker]
        mine = [key for key in free if held.get(key) == marker]
        for key in mine + free:
            book.db.execute("DELETE FROM claims WHERE marker = ?", (marker,))
            book.db.execute("INSERT INTO claims VALUES (?, ?, ?, ?, ?, ?)",
                            (*key, marker, now + seconds))
            return key
    return None


def claimed_by_others(book: Gradebook, marker: str, now: float) -> set[AnswerKey]:
    return {tuple(r) for r in book.db.execute(
        "SELECT student, assignment, question, answer_sha256 FROM claims WHERE marker != ? "
        "AND until >= ?", (marker, now))}


def answer(book: Gradebook, key: AnswerKey) -> Answer | None:
    """The answer ``key`` with its figure (from any submission that holds it)."""
    row = book.db.execute("SELECT question, text, figure, answer_sha256, flag, missing FROM "
                          "answers WHERE student = ? AND assignment = ? AND question = ? AND "
                          "answer_sha256 = ? ORDER BY figure IS NULL LIMIT 1", key).fetchone()
    if row is None:
        return None
    question, text, png, sha, flag, missing = row
    return Answer(question, text, None if png is None else bytes(png), sha, flag, bool(missing))
