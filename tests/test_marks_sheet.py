"""Tests for grader/tools/marks_sheet.py and `grader marks export|import`: the spreadsheet
round trip, and every bad row named (file and line) with nothing stored."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from click.testing import CliRunner
from written_course import HOSTILE, class_submissions, gradebook, write_course

from grader.cli.main import main
from grader.course.config import Course
from grader.errors import MarkingError
from grader.pipeline import written
from grader.pipeline.store import open_gradebook
from grader.tools import marking
from grader.tools.marks_sheet import export_marks, import_marks


@pytest.fixture
def course(tmp_path: Path) -> Course:
    return write_course(tmp_path)


@pytest.fixture
def book_path(course: Course, tmp_path: Path) -> Path:
    return gradebook(course, tmp_path / "gb.sqlite", class_submissions(course, tmp_path / "subs"))


def _export(course: Course, book_path: Path, path: Path) -> list[dict[str, str]]:
    with open_gradebook(book_path) as book:
        export_marks(book, course, path)
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _fill(rows: list[dict[str, str]], student: str, question: str, **values: str) -> None:
    row = next(r for r in rows if (r["student"], r["question"]) == (student, question))
    row.update(values)


def _marks(book_path: Path) -> dict[tuple[str, str], written.Mark]:
    with open_gradebook(book_path) as book:
        return {(m.student, m.question): m for m in written.marks(book).values()}


def test_the_export_lists_every_answer_with_what_a_marker_needs(course, book_path, tmp_path):
    rows = _export(course, book_path, tmp_path / "marks.csv")
    assert len(rows) == 10  # 5 students x 2 questions
    dave = next(r for r in rows if (r["student"], r["question"]) == ("dave", "roofline"))
    assert dave["answer"] == HOSTILE and dave["version"] == "0" and dave["possible"] == "2.00"
    assert dave["rubric"] == "names_layers +1; ridge +1; compute_bound -1"
    carol = next(r for r in rows if r["student"] == "carol")
    assert carol["flag"].startswith("no answer")


def test_a_filled_sheet_is_imported_and_shows_in_the_scores(course, book_path, tmp_path):
    rows = _export(course, book_path, tmp_path / "marks.csv")
    _fill(rows, "alice", "roofline", items="names_layers, ridge", comment="=good")
    _fill(rows, "alice", "flops", points="1")
    _fill(rows, "bob", "roofline", items="compute_bound", comment="Read the figure again.")
    sheet = _write(tmp_path / "filled.csv", rows)
    with open_gradebook(book_path) as book:
        done = import_marks(book, course, sheet, "ann")
        scored = {r.student: r for r in marking.scored_rows(book, course)}
        log = written.log_entries(book)
    assert (done.saved, done.unchanged) == (3, 7)
    marks = _marks(book_path)
    assert marks[("alice", "roofline")].items == ("names_layers", "ridge")
    assert marks[("alice", "roofline")].comment == "=good"
    assert (marks[("alice", "flops")].points, marks[("alice", "flops")].marker) == (1.0, "ann")
    assert scored["alice"].final == 100.0
    assert {e.action for e in log} == {"import filled.csv"}
    # the same sheet again changes nothing; a fresh export carries the marks back
    with open_gradebook(book_path) as book:
        assert import_marks(book, course, sheet, "ann").saved == 0
    again = _export(course, book_path, tmp_path / "again.csv")
    alice = next(r for r in again if (r["student"], r["question"]) == ("alice", "roofline"))
    assert (alice["items"], alice["version"], alice["comment"]) == ("names_layers ridge", "1",
                                                                    "'=good")


@pytest.mark.parametrize(("student", "question", "values", "problem"), [
    ("zed", "roofline", {"items": "ridge"}, "unknown student 'zed'"),
    ("alice", "essay", {"items": "ridge"}, "no written question 'essay'"),
    ("alice", "roofline", {"items": "ridge brilliance"}, "no rubric item brilliance"),
    ("alice", "roofline", {"points": "3"}, r"within 0..2"),
    ("alice", "roofline", {"points": "two"}, "not a number"),
    ("alice", "roofline", {"points": "1", "items": "ridge"}, "not both"),
    ("alice", "roofline", {"comment": "no points"}, "give one of them"),
    ("alice", "roofline", {"items": "ridge", "answer_sha256": "0" * 64}, "changed since the "
                                                                         "export"),
])
def test_a_bad_row_is_named_and_nothing_is_stored(course, book_path, tmp_path, student,
                                                  question, values, problem):
    rows = _export(course, book_path, tmp_path / "marks.csv")
    _fill(rows, "bob", "flops", points="1")  # a good row: not stored either
    target = next(r for r in rows if r["student"] == "alice" and r["question"] == "roofline")
    target.update({"student": student, "question": question, **values})
    sheet = _write(tmp_path / "bad.csv", rows)
    line = 2 + rows.index(target)
    with open_gradebook(book_path) as book, pytest.raises(MarkingError) as info:
        import_marks(book, course, sheet, "ann")
    assert f"{sheet}, line {line}: " in str(info.value)
    assert "nothing was stored" in str(info.value)
    assert problem in str(info.value).split(f"line {line}: ", 1)[1]
    assert _marks(book_path) == {}


def test_a_mark_saved_since_the_export_is_not_overwritten(course, book_path, tmp_path):
    rows = _export(course, book_path, tmp_path / "marks.csv")
    _fill(rows, "alice", "roofline", items="ridge")
    with open_gradebook(book_path) as book:  # meanwhile, in the page
        entry = next(e for e in marking.queue(book, course, "hw1", "roofline")
                     if e.student == "alice")
        marking.mark_answer(book, course, entry.key, ("names_layers",), None, "", "ben", 0)
    with open_gradebook(book_path) as book, pytest.raises(MarkingError,
                                                          match="saved by ben at"):
        import_marks(book, course, _write(tmp_path / "late.csv", rows), "ann")
    assert _marks(book_path)[("alice", "roofline")].items == ("names_layers",)


def test_a_row_given_twice_or_a_sheet_without_its_columns(course, book_path, tmp_path):
    rows = _export(course, book_path, tmp_path / "marks.csv")
    _fill(rows, "alice", "roofline", items="ridge")
    twice = _write(tmp_path / "twice.csv", rows + [dict(rows[0])])
    with open_gradebook(book_path) as book, pytest.raises(MarkingError, match="given twice"):
        import_marks(book, course, twice, "ann")
    (tmp_path / "bare.csv").write_text("student,question,points\nalice,roofline,1\n")
    with open_gradebook(book_path) as book, pytest.raises(MarkingError,
                                                          match="missing column.*assignment"):
        import_marks(book, course, tmp_path / "bare.csv", "ann")


def test_the_commands_round_trip_and_exit_2_on_a_bad_sheet(course, book_path, tmp_path):
    common = ["--course", str(course.path), "--gradebook", str(book_path)]
    sheet = tmp_path / "cli.csv"
    result = CliRunner().invoke(main, ["marks", "export", str(sheet), *common])
    assert result.exit_code == 0 and "10 answer(s)" in result.output
    rows = list(csv.DictReader(sheet.open(encoding="utf-8")))
    _fill(rows, "erin", "roofline", items="names_layers")
    _write(sheet, rows)
    result = CliRunner().invoke(main, ["marks", "import", str(sheet), *common,
                                       "--marker", "Cay"])
    assert result.exit_code == 0 and "1 mark(s) saved" in result.output
    assert _marks(book_path)[("erin", "roofline")].marker == "Cay"
    _fill(rows, "erin", "flops", points="9")
    _write(sheet, rows)
    result = CliRunner().invoke(main, ["marks", "import", str(sheet), *common])
    assert result.exit_code == 2 and "line" in result.output
    result = CliRunner().invoke(main, ["marks", "export", str(sheet), "--course",
                                       str(course.path), "--gradebook", str(tmp_path / "no")])
    assert result.exit_code == 2 and "no gradebook yet" in result.output
