"""Tests for grader/pipeline/written.py and the gradebook's schema 3: the answers and marks
tables, added to an older gradebook without losing a row; a save based on an out-of-date
version refused and logged; two markers given different answers; a mark kept by an unchanged
answer."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from rows import make_row
from test_store import V1_COLUMNS

from grader.errors import StaleMark
from grader.pipeline import written
from grader.pipeline.store import SCHEMA_VERSION, open_gradebook
from grader.pipeline.written import NewMark
from grader.records import Answer

KEY = ("alice", "hw1", "roofline", "a" * 64)


def _answer(text: str = "Both layers.", question: str = "roofline") -> Answer:
    return Answer(question, text, b"\x89PNG\r\n\x1a\nfigure", f"{hash(text) & 0xffff:064x}")


def test_a_version_2_gradebook_gets_the_new_tables_and_keeps_every_row(tmp_path: Path) -> None:
    path = tmp_path / "gb.sqlite"
    db = sqlite3.connect(path)
    with db:  # what a version-2 grader wrote
        db.execute(f"CREATE TABLE grades ({V1_COLUMNS}, exec_seconds REAL, cell_errors TEXT, "
                   "PRIMARY KEY (student, assignment, sha256))")
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        db.execute("INSERT INTO meta VALUES ('schema_version', '2')")
        for student in ("alice", "bob"):
            row = make_row(student)
            db.execute("INSERT INTO grades VALUES (" + ", ".join("?" * 20) + ")",
                       (row.student, row.assignment, row.sha256, row.path, row.submitted_at,
                        row.time_problem, row.status.value, row.detail, row.earned,
                        row.possible, row.raw, row.cap, row.final, row.late_reason, row.seed,
                        row.graded_at, row.seconds, "[]", row.exec_seconds, "[]"))
    db.close()
    with open_gradebook(path) as book:
        assert book.rows() == [make_row("alice"), make_row("bob")]
        written.store_answers(book, ("alice", "hw1", make_row().sha256), [_answer()])
        assert written.has_answers(book, ("alice", "hw1", make_row().sha256))
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == \
        str(SCHEMA_VERSION) == "4"
    db.close()


def test_answers_round_trip_with_their_figure(tmp_path: Path) -> None:
    with open_gradebook(tmp_path / "gb.sqlite") as book:
        submission = ("alice", "hw1", "s" * 64)
        stored = [_answer(), Answer("flops", "", None, "0" * 64, "no answer: x", missing=True)]
        written.store_answers(book, submission, stored)
        assert written.answers(book, figures=True)[submission] == {a.question: a for a in stored}
        assert written.answers(book)[submission]["roofline"].figure is None  # not loaded
        roofline = stored[0]
        assert written.answer(book, ("alice", "hw1", "roofline", roofline.sha256)) == roofline
        written.store_answers(book, submission, stored[1:])  # graded again: replaced
        assert list(written.answers(book)[submission]) == ["flops"]


def _save(book, based_on: int, comment: str, marker: str = "ann", items=("ridge",)):
    return written.save_marks(book, [NewMark(KEY, items, None, comment, based_on)], marker)


def test_a_save_on_an_out_of_date_version_is_refused_and_logged(tmp_path: Path) -> None:
    with open_gradebook(tmp_path / "gb.sqlite") as book:
        [first] = _save(book, 0, "first")
        assert (first.version, first.marker) == (1, "ann")
        with pytest.raises(StaleMark) as info:
            _save(book, 0, "ben's, based on nothing", marker="ben")
        assert "ann at" in str(info.value) and info.value.current == first
        assert written.mark(book, KEY) == first  # nothing stored
        [second] = _save(book, 1, "second", marker="ben")
        assert second.version == 2
        log = written.log_entries(book)
    assert [(e.marker, e.action) for e in log] == [
        ("ann", "mark"), ("ben", "mark refused (out of date)"), ("ben", "mark")]
    assert json.loads(log[1].detail)["comment"] == "ben's, based on nothing"  # never lost


def test_a_batch_with_one_stale_mark_stores_none_of_it(tmp_path: Path) -> None:
    other = ("bob", "hw1", "roofline", "b" * 64)
    with open_gradebook(tmp_path / "gb.sqlite") as book:
        _save(book, 0, "first")
        with pytest.raises(StaleMark):
            written.save_marks(book, [NewMark(other, (), 1.0, "", 0),
                                      NewMark(KEY, (), 1.0, "", 0)], "importer")
        assert written.mark(book, other) is None


def test_two_markers_are_given_different_answers(tmp_path: Path) -> None:
    queue = [(s, "hw1", "roofline", s[0] * 64) for s in ("alice", "bob", "carol")]
    with open_gradebook(tmp_path / "gb.sqlite") as book:
        ann = written.claim_next(book, queue, "ann", now=100.0)
        ben = written.claim_next(book, queue, "ben", now=101.0)
        assert (ann, ben) == (queue[0], queue[1])
        assert written.claim_next(book, queue, "ann", now=102.0) == ann  # still hers
        written.save_marks(book, [NewMark(ann, (), 1.0, "", 0)], "ann")
        assert written.claim_next(book, queue, "ann", now=103.0) == queue[2]
        assert written.claim_next(book, queue, "cay", now=104.0) is None  # all open or marked
        # a claim left open too long is given to someone else
        later = 104.0 + written.CLAIM_SECONDS + 1
        assert written.claim_next(book, queue, "cay", now=later) == queue[1]
