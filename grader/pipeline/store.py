"""Stage 5, store: the SQLite gradebook, one row per graded submission.

Rows are keyed by (student, assignment, sha256 of the notebook), so a rerun skips submissions
whose content did not change and a resubmission adds a row beside the old one. Each row is
written in its own transaction, so a grader killed mid-batch leaves every finished row intact
and no half-written one. One grading run at a time holds the gradebook's lock file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import json
import os
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from grader.errors import GradebookError
from grader.records import CellError, ChallengeResult, CheckResult, GradeRow, Outcome, Status

SCHEMA_VERSION = 4

# A row's fields, one column each, but for ``cell_errors`` and ``more_cell_errors``, kept
# together in the column ``cell_errors`` (a JSON list, then ``{"more": n}`` when cut); the
# verdicts are a JSON list in ``checks``. ``written`` is not stored in the row: the answers
# and their marks have tables of their own (below), joined to a row when it is shown.
_COLUMNS = [f.name for f in dataclasses.fields(GradeRow)
            if f.name not in ("more_cell_errors", "written")]
_TYPES = {"earned": "REAL", "possible": "REAL", "raw": "REAL", "cap": "REAL", "final": "REAL",
          "seed": "INTEGER", "seconds": "REAL", "exec_seconds": "REAL"}
# Columns each schema version added, with the value rows of the older version get. Version 1
# recorded only the notebook's run in ``seconds`` and no cell errors beyond the row's detail.
_ADDED: dict[int, list[tuple[str, str]]] = {
    2: [("exec_seconds", "seconds"), ("cell_errors", "'[]'")],
    3: [],  # version 3 added the tables of written answers (below); no column of grades
    4: [],  # version 4: a check in ``checks`` may hold a fraction and a challenge's result
}
# The written answers (grader.pipeline.written reads and writes them). ``answers``: each
# question's answer in one submission (by the submission's sha256), as read from its file.
# ``marks``: a person's mark of one answer, keyed by the answer's own hash, so a resubmission
# with the same answer keeps it; ``version`` counts its saves (a save based on an older one
# is refused). ``mark_log``: every save, refusal, import and rubric change, who and when.
# ``claims``: the answer each marker has open, so that two markers get different ones.
_MARK_TABLES = (
    "CREATE TABLE IF NOT EXISTS answers (student TEXT, assignment TEXT, sha256 TEXT, "
    "question TEXT, text TEXT, figure BLOB, answer_sha256 TEXT, flag TEXT, missing INTEGER, "
    "PRIMARY KEY (student, assignment, sha256, question))",
    "CREATE TABLE IF NOT EXISTS marks (student TEXT, assignment TEXT, question TEXT, "
    "answer_sha256 TEXT, items TEXT, points REAL, comment TEXT, marker TEXT, marked_at TEXT, "
    "version INTEGER, PRIMARY KEY (student, assignment, question, answer_sha256))",
    "CREATE TABLE IF NOT EXISTS mark_log (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT, "
    "marker TEXT, action TEXT, student TEXT, assignment TEXT, question TEXT, "
    "answer_sha256 TEXT, detail TEXT)",
    "CREATE TABLE IF NOT EXISTS claims (student TEXT, assignment TEXT, question TEXT, "
    "answer_sha256 TEXT, marker TEXT, until REAL, "
    "PRIMARY KEY (student, assignment, question, answer_sha256))",
)


def _values(row: GradeRow) -> tuple[Any, ...]:
    record: dict[str, Any] = {name: getattr(row, name) for name in _COLUMNS}
    record["status"] = row.status.value
    record["checks"] = json.dumps([_check_json(c) for c in row.checks])
    errors: list[dict[str, Any]] = [{"cell": e.cell, "ename": e.ename, "message": e.message}
                                    for e in row.cell_errors]
    if row.more_cell_errors:
        errors.append({"more": row.more_cell_errors})
    record["cell_errors"] = json.dumps(errors)
    return tuple(record[name] for name in _COLUMNS)


def _check_json(c: CheckResult) -> dict[str, Any]:
    found: dict[str, Any] = {"name": c.name, "points": c.points, "outcome": c.outcome.value,
                             "message": c.message, "title": c.title, "task": c.task}
    if c.fraction != 1.0:
        found["fraction"] = c.fraction
    if c.challenge is not None:
        found["challenge"] = dataclasses.asdict(c.challenge)
    return found


def _check(c: dict[str, Any]) -> CheckResult:
    challenge = c.get("challenge")
    return CheckResult(str(c["name"]), float(c["points"]), Outcome(c["outcome"]),
                       str(c.get("message", "")), str(c.get("title", "")), str(c.get("task", "")),
                       float(c.get("fraction", 1.0)),
                       ChallengeResult(**challenge) if isinstance(challenge, dict) else None)


def _row(values: tuple[Any, ...]) -> GradeRow:
    record = dict(zip(_COLUMNS, values, strict=True))
    record["status"] = Status(record["status"])
    record["checks"] = tuple(_check(c) for c in json.loads(record["checks"] or "[]"))
    errors, more = [], 0
    for item in json.loads(record["cell_errors"] or "[]"):
        if "more" in item:
            more = int(item["more"])
        else:
            errors.append(CellError(int(item["cell"]), str(item["ename"]),
                                    str(item.get("message", ""))))
    record["cell_errors"], record["more_cell_errors"] = tuple(errors), more
    return GradeRow(**record)


class Gradebook:
    """A gradebook file. Use ``open_gradebook`` (shared reads) or ``locked`` (a grading run)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None, timeout=30)
        except sqlite3.Error as exc:
            raise GradebookError(f"{path}: cannot open the gradebook: {exc}") from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._create()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise GradebookError(f"{path}: not a usable gradebook: {exc}") from exc
        except GradebookError:
            self._db.close()
            raise

    def _create(self) -> None:
        columns = ", ".join(f"{c} {_TYPES.get(c, 'TEXT')}" for c in _COLUMNS)
        with self._transaction():
            self._db.execute(f"CREATE TABLE IF NOT EXISTS grades ({columns}, "
                             "PRIMARY KEY (student, assignment, sha256))")
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, "
                             "value TEXT)")
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                             (str(SCHEMA_VERSION),))
            text = self._db.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
            version = int(text) if str(text).isdigit() else -1
            if not 1 <= version <= SCHEMA_VERSION:
                raise GradebookError(f"{self.path}: gradebook schema {text}, this grader "
                                     f"reads 1 to {SCHEMA_VERSION}")
            self._migrate(version)
            for statement in _MARK_TABLES:
                self._db.execute(statement)

    def _migrate(self, version: int) -> None:
        # add what later versions added, filled from what the older rows hold; inside the
        # caller's transaction, so a failure leaves the file as it was
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for column, fill in _ADDED[target]:
                self._db.execute(f"ALTER TABLE grades ADD COLUMN {column} "
                                 f"{_TYPES.get(column, 'TEXT')}")
                self._db.execute(f"UPDATE grades SET {column} = {fill}")
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                             (str(target),))

    def public_salt(self) -> str:
        """A random secret of this gradebook, made on first use: the key of the pseudonyms on
        pages shown to the class (``grader report --public``), so that no student can work out
        whose row is whose from the ids they know."""
        with self._transaction():
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('public_salt', ?)",
                             (secrets.token_hex(16),))
            return str(self._db.execute(
                "SELECT value FROM meta WHERE key = 'public_salt'").fetchone()[0])

    def get(self, student: str, assignment: str, sha256: str) -> GradeRow | None:
        cur = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM grades "
            "WHERE student = ? AND assignment = ? AND sha256 = ?", (student, assignment, sha256))
        row = cur.fetchone()
        return None if row is None else _row(row)

    def put(self, row: GradeRow) -> None:
        """Insert or replace one row, atomically."""
        placeholders = ", ".join("?" for _ in _COLUMNS)
        with self._transaction():
            self._db.execute(f"INSERT OR REPLACE INTO grades ({', '.join(_COLUMNS)}) "
                             f"VALUES ({placeholders})", _values(row))

    def rows(self) -> list[GradeRow]:
        cur = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM grades "
                               "ORDER BY student, assignment, submitted_at, graded_at")
        return [_row(r) for r in cur.fetchall()]

    @property
    def db(self) -> sqlite3.Connection:
        """The connection, for the modules that keep tables of their own in the gradebook
        (``grader.pipeline.written``); write only inside ``transaction()``."""
        return self._db

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """One write transaction (``BEGIN IMMEDIATE``): all of it, or nothing."""
        return self._transaction()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()


@contextmanager
def open_gradebook(path: Path) -> Iterator[Gradebook]:
    """Open (creating if needed) the gradebook at ``path`` for reading and single writes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    book = Gradebook(path)
    try:
        yield book
    finally:
        book.close()


@contextmanager
def locked(path: Path) -> Iterator[Gradebook]:
    """The gradebook for a grading run: refuse with GradebookError while another run holds it.
    The lock file is removed when the run ends, so a finished run leaves the gradebook alone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + ".lock")
    fd = _lock(path, lock_path)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} since {dt.datetime.now(dt.UTC).isoformat()}\n".encode())
        with open_gradebook(path) as book:
            yield book
    finally:
        lock_path.unlink(missing_ok=True)  # while still held: the next run makes a new one
        os.close(fd)  # closing releases the lock


def _lock(path: Path, lock_path: Path) -> int:
    """An open descriptor of ``lock_path``, locked; the lock file is the one at that path (a run
    that finished meanwhile removes its file, and a lock on a removed file guards nothing)."""
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise GradebookError(f"{path}: another grader run is using this gradebook; wait for "
                                 f"it to finish (lock: {lock_path})") from None
        try:
            if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
