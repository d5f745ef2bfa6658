"""Tests for grader/pipeline/store.py: the SQLite gradebook (rows, keys, lock, crash safety)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from grader.errors import GradebookError
from grader.pipeline.store import SCHEMA_VERSION, locked, open_gradebook
from grader.records import (
    MAX_CELL_ERRORS,
    CellError,
    CheckResult,
    GradeRow,
    Outcome,
    Status,
    kept_cell_errors,
)

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def child_env() -> dict[str, str]:
    """Environment of a child Python: finds grader/ and this module, writes no .pyc files."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)]),
            "PYTHONDONTWRITEBYTECODE": "1"}


def make_row(**changes: object) -> GradeRow:
    checks = (CheckResult("test_counts", 2.0, Outcome.PASSED),
              CheckResult("test_flops", 3.0, Outcome.FAILED, "expected 2 * MACs, got 1 * MACs"),
              CheckResult("test_broken", 1.0, Outcome.ERROR, "grader error: boom"))
    row = GradeRow(
        student="alice", assignment="hw1", sha256="a" * 64, path="/sub/alice/hw1/hw1.ipynb",
        submitted_at="2026-11-04T11:58:00.123456+03:00", time_problem="", status=Status.OK,
        detail="ran 12 cells", earned=2.0, possible=6.0, raw=33.33, cap=100.0, final=33.33,
        late_reason="Submitted on time.", seed=123456789, graded_at="2026-11-05T10:00:00+00:00",
        seconds=4.25, checks=tuple(checks))
    return replace(row, **changes)


def row_for(i: int) -> GradeRow:
    """Row number ``i`` of the crash test: every field derived from ``i``, and big (about 40 kB)
    so that one row spans several database pages."""
    digest = hashlib.sha256(str(i).encode()).hexdigest()
    return make_row(student=f"s{i:06d}", sha256=digest, detail=f"{i}:" + digest * 300,
                    late_reason=f"{i}:" + "r" * 20_000, earned=float(i), seed=i,
                    checks=tuple(
                        (CheckResult(f"check_{i}", float(i % 7 + 1), Outcome.FAILED,
                                     digest * 10),)))


def test_put_get_roundtrip_all_fields(tmp_path: Path) -> None:
    row = make_row()
    with open_gradebook(tmp_path / "gb.sqlite") as book:
        book.put(row)
    with open_gradebook(tmp_path / "gb.sqlite") as book:
        back = book.get("alice", "hw1", "a" * 64)
    assert back == row
    assert back is not None
    assert back.checks == (
        CheckResult("test_counts", 2.0, Outcome.PASSED),
        CheckResult("test_flops", 3.0, Outcome.FAILED, "expected 2 * MACs, got 1 * MACs"),
        CheckResult("test_broken", 1.0, Outcome.ERROR, "grader error: boom"))


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"submitted_at": None, "time_problem": "no timestamp.txt", "cap": None,
                      "final": None}, id="time-unknown"),
        pytest.param({"student": "Ёлкина, \"Аня\"\n", "detail": "", "checks": ()},
                     id="unicode-quotes-newline"),
        pytest.param({"student": "007", "sha256": "0123456789"}, id="digit-strings-stay-text"),
        pytest.param({"raw": 0.0, "final": 0.0, "cap": 0.0, "seconds": 0.0, "seed": 0},
                     id="zeros"),
        pytest.param({"seed": 2**31 - 1, "raw": 100.0, "final": 100.0}, id="max-seed"),
    ],
)
def test_roundtrip_edge_values(tmp_path: Path, changes: dict[str, object]) -> None:
    row = make_row(**changes)
    with open_gradebook(tmp_path / "gb.sqlite") as book:
        book.put(row)
        back = book.get(row.student, row.assignment, row.sha256)
    assert back == row
    assert back is not None
    for name in ("student", "sha256", "seed", "raw", "cap", "final"):
        assert type(getattr(back, name)) is type(getattr(row, name)), name


def test_get_unknown_key_is_none(tmp_path: Path) -> None:
    with open_gradebook(tmp_path / "gb.sqlite") as book:
        book.put(make_row())
        assert book.get("alice", "hw1", "b" * 64) is None
        assert book.get("alice", "hw2", "a" * 64) is None
        assert book.get("bob", "hw1", "a" * 64) is None


def test_rows_ordering(tmp_path: Path) -> None:
    rows = [
        make_row(student="bob", assignment="hw1", sha256="1"),
        make_row(student="alice", assignment="hw2", sha256="2"),
        make_row(student="alice", assignment="hw1", sha256="3",
                 submitted_at="2026-11-04T12:00:00+03:00"),
        make_row(student="alice", assignment="hw1", sha256="4",
                 submitted_at="2026-11-04T10:00:00+03:00", graded_at="2026-11-06T00:00:00+00:00"),
        make_row(student="alice", assignment="hw1", sha256="5",
                 submitted_at="2026-11-04T10:00:00+03:00", graded_at="2026-11-05T00:00:00+00:00"),
        make_row(student="alice", assignment="hw1", sha256="6", submitted_at=None),
    ]
    with open_gradebook(tmp_path / "gb.sqlite") as book:
        for row in rows:
            book.put(row)
        ordered = book.rows()
    # student, assignment, then submission time (unknown first), then grading time.
    assert [r.sha256 for r in ordered] == ["6", "5", "4", "3", "2", "1"]


def test_same_key_is_replaced(tmp_path: Path) -> None:
    with open_gradebook(tmp_path / "gb.sqlite") as book:
        book.put(make_row(raw=10.0, final=10.0, seed=1))
        book.put(make_row(raw=90.0, final=90.0, seed=2))
        assert book.rows() == [make_row(raw=90.0, final=90.0, seed=2)]


def test_resubmissions_are_kept_side_by_side(tmp_path: Path) -> None:
    first, second = make_row(sha256="1" * 64), make_row(sha256="2" * 64, raw=80.0)
    other_ha = make_row(sha256="1" * 64, assignment="hw2")
    with open_gradebook(tmp_path / "gb.sqlite") as book:
        for row in (first, second, other_ha):
            book.put(row)
        assert sorted(book.rows(), key=lambda r: (r.assignment, r.sha256)) == [
            first, second, other_ha]
        assert book.get("alice", "hw1", "1" * 64) == first
        assert book.get("alice", "hw1", "2" * 64) == second


def test_creates_parent_folders(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "gb.sqlite"
    with open_gradebook(path) as book:
        book.put(make_row())
    with locked(tmp_path / "c" / "gb.sqlite") as book:
        assert book.rows() == []
    assert path.is_file()


# -- the lock ----------------------------------------------------------------------------------


def test_second_lock_in_same_process_is_refused(tmp_path: Path) -> None:
    # flock locks belong to an open file description: a second os.open of the lock file in
    # the same process conflicts with the first, as another process would.
    path = tmp_path / "gb.sqlite"
    with locked(path) as book:
        book.put(make_row())
        with pytest.raises(GradebookError), locked(path):
            pass
        # The refused attempt did not release the lock held here.
        with pytest.raises(GradebookError), locked(path):
            pass
        assert book.rows() == [make_row()]


def test_lock_is_released_after_the_run(tmp_path: Path) -> None:
    path = tmp_path / "gb.sqlite"
    with locked(path) as book:
        book.put(make_row())
    with locked(path) as book:
        assert book.rows() == [make_row()]


def test_lock_is_released_after_an_exception(tmp_path: Path) -> None:
    path = tmp_path / "gb.sqlite"
    with pytest.raises(KeyError), locked(path):
        raise KeyError("boom")
    with locked(path) as book:
        assert book.rows() == []


def test_lock_held_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "gb.sqlite"
    holder = (
        "import sys\n"
        "from pathlib import Path\n"
        "from grader.pipeline.store import locked\n"
        "with locked(Path(sys.argv[1])):\n"
        "    print('locked', flush=True)\n"
        "    sys.stdin.read()\n"
    )
    child = subprocess.Popen([sys.executable, "-c", holder, str(path)], cwd=tmp_path,
                             env=child_env(),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline() == "locked\n"
        with pytest.raises(GradebookError), locked(path):
            pass
        child.stdin.close()  # the child leaves its `with` block and exits
        assert child.wait(timeout=60) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdin, child.stdout):
            if stream is not None and not stream.closed:
                stream.close()
    with locked(path) as book:
        assert book.rows() == []


# -- not a gradebook ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"student,hw1\nalice,90\n" * 100, id="csv"),
        pytest.param(os.urandom(4096), id="random-bytes"),
    ],
)
def test_not_a_gradebook(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "gb.sqlite"
    path.write_bytes(content)
    with pytest.raises(GradebookError), open_gradebook(path):
        pass
    with pytest.raises(GradebookError), locked(path):
        pass
    assert path.read_bytes() == content  # left as it was
    # The refused run released its lock: only the file is in the way, not the lock.
    path.unlink()
    with locked(path) as book:
        assert book.rows() == []


def test_other_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gb.sqlite"
    with open_gradebook(path):
        pass
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                   (str(SCHEMA_VERSION + 1),))
    db.close()
    with pytest.raises(GradebookError), open_gradebook(path):
        pass


V1_COLUMNS = ("student TEXT, assignment TEXT, sha256 TEXT, path TEXT, submitted_at TEXT, "
              "time_problem TEXT, status TEXT, detail TEXT, earned REAL, possible REAL, "
              "raw REAL, cap REAL, final REAL, late_reason TEXT, seed INTEGER, graded_at TEXT, "
              "seconds REAL, checks TEXT")


def test_a_version_1_gradebook_is_upgraded_and_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "gb.sqlite"
    old = make_row(status=Status.CELL_ERROR, detail="1 cell(s) raised an error; first: cell 3")
    db = sqlite3.connect(path)
    with db:
        db.execute(f"CREATE TABLE grades ({V1_COLUMNS}, "
                   "PRIMARY KEY (student, assignment, sha256))")
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        values = [getattr(old, c) for c in V1_COLUMNS.replace(",", "").split()[::2]]
        values[6] = old.status.value
        values[17] = json.dumps([{"name": c.name, "points": c.points, "outcome": c.outcome.value,
                                  "message": c.message} for c in old.checks])
        db.execute(f"INSERT INTO grades VALUES ({', '.join('?' * len(values))})", values)
    db.close()
    with open_gradebook(path) as book:
        (row,) = book.rows()
        book.put(make_row(student="bob"))
    # version 1 timed only the notebook's run; it kept no list of cell errors
    assert row == replace(old, exec_seconds=old.seconds, cell_errors=())
    with open_gradebook(path) as book:
        assert [r.student for r in book.rows()] == ["alice", "bob"]
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta").fetchone()[0] == str(SCHEMA_VERSION)
    db.close()


def test_cell_errors_round_trip_and_are_capped_with_a_count(tmp_path: Path) -> None:
    errors = tuple(CellError(i, "ValueError", f"bad {i}") for i in range(1, 26))
    kept, more = kept_cell_errors(errors)
    assert kept == errors[:MAX_CELL_ERRORS] and more == 25 - MAX_CELL_ERRORS
    row = make_row(cell_errors=kept, more_cell_errors=more)
    with open_gradebook(tmp_path / "gb.sqlite") as book:
        book.put(row)
        back = book.get(row.student, row.assignment, row.sha256)
    assert back is not None
    assert (back.cell_errors, back.more_cell_errors) == (kept, more)
    assert (make_row().cell_errors, make_row().more_cell_errors) == ((), 0)


# -- crash safety ------------------------------------------------------------------------------

WRITER = """
import sys
from pathlib import Path
from grader.pipeline.store import open_gradebook
from test_store import row_for
with open_gradebook(Path(sys.argv[1])) as book:
    i = 0
    while True:
        book.put(row_for(i))
        if i == 2:
            print("writing", flush=True)
        i += 1
"""


def test_kill_9_mid_batch_leaves_only_whole_rows(tmp_path: Path) -> None:
    path = tmp_path / "gb.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], cwd=tmp_path, stdout=subprocess.PIPE,
        text=True, env=child_env())
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "writing\n"
        time.sleep(0.3)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()

    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        db.close()
    with open_gradebook(path) as book:
        rows = book.rows()
    assert len(rows) >= 3
    # Rows commit one by one in order: the survivors are exactly rows 0..n-1, each whole.
    assert rows == [row_for(i) for i in range(len(rows))]
