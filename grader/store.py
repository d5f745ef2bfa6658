"""Stage 5, store: the SQLite gradebook, one row per graded submission.

Rows are keyed by (student, assignment, sha256 of the notebook), so a rerun skips submissions
whose content did not change and a resubmission adds a row beside the old one. Each row is
written in its own transaction, so a grader killed mid-batch leaves every finished row intact
and no half-written one. One grading run at a time holds the gradebook's lock file.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from grader.check import CheckResult, Outcome

SCHEMA_VERSION = 1


class GradebookError(Exception):
    """The gradebook cannot be used: locked by another run, or not a gradebook."""


@dataclass(frozen=True)
class GradeRow:
    """One graded submission: what was run, what it scored, why. Percents are 0..100."""

    student: str
    assignment: str
    sha256: str
    path: str
    submitted_at: str | None  # ISO 8601 with offset, None when unknown
    time_problem: str
    status: str  # grader.execute.ExecStatus value
    detail: str
    earned: float
    possible: float
    raw: float
    cap: float | None
    final: float | None
    late_reason: str
    seed: int
    graded_at: str  # ISO 8601 UTC
    seconds: float
    checks: str  # JSON list of {name, points, outcome, message}

    @property
    def check_results(self) -> tuple[CheckResult, ...]:
        return tuple(CheckResult(c["name"], c["points"], Outcome(c["outcome"]), c["message"])
                     for c in json.loads(self.checks))

    @staticmethod
    def encode_checks(results: tuple[CheckResult, ...]) -> str:
        return json.dumps([{"name": r.name, "points": r.points, "outcome": r.outcome.value,
                            "message": r.message} for r in results])


_COLUMNS = [f.name for f in fields(GradeRow)]
_TYPES = {"earned": "REAL", "possible": "REAL", "raw": "REAL", "cap": "REAL", "final": "REAL",
          "seed": "INTEGER", "seconds": "REAL"}


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
        self._db.execute(f"CREATE TABLE IF NOT EXISTS grades ({columns}, "
                         "PRIMARY KEY (student, assignment, sha256))")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                         (str(SCHEMA_VERSION),))
        version = self._db.execute(
            "SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        if version != str(SCHEMA_VERSION):
            raise GradebookError(f"{self.path}: gradebook schema {version}, this grader "
                                 f"writes {SCHEMA_VERSION}")

    def get(self, student: str, assignment: str, sha256: str) -> GradeRow | None:
        cur = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM grades "
            "WHERE student = ? AND assignment = ? AND sha256 = ?", (student, assignment, sha256))
        row = cur.fetchone()
        return None if row is None else GradeRow(*row)

    def put(self, row: GradeRow) -> None:
        """Insert or replace one row, atomically."""
        placeholders = ", ".join("?" for _ in _COLUMNS)
        with self._transaction():
            self._db.execute(f"INSERT OR REPLACE INTO grades ({', '.join(_COLUMNS)}) "
                             f"VALUES ({placeholders})", tuple(asdict(row).values()))

    def rows(self) -> list[GradeRow]:
        cur = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM grades "
                               "ORDER BY student, assignment, submitted_at, graded_at")
        return [GradeRow(*r) for r in cur.fetchall()]

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
    """The gradebook for a grading run: refuse with GradebookError while another run holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise GradebookError(f"{path}: another grader run is using this gradebook; wait for "
                                 f"it to finish (lock: {lock_path})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} since {dt.datetime.now(dt.UTC).isoformat()}\n".encode())
        with open_gradebook(path) as book:
            yield book
    finally:
        os.close(fd)  # closing releases the lock
