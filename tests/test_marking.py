"""Tests for grader/tools/marking.py and the one function that joins marks to a row
(grader/output/view.py, with_written): a submission's points are the checks' plus the marks,
the late cap applies to the total, the final waits until every question is marked, the pass
rule counts the combined finals, and every output (CSV, feedback, report, Gradescope) shows
it. Also what ships: the answer cell as a stub, the rubric found by the kit's secret scan."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from rows import Page, make_row
from written_course import (
    GOOD,
    RUBRIC_DATA,
    WEAK,
    answered,
    class_submissions,
    gradebook,
    row_for,
    write_course,
    write_submission,
)

from grader.course.config import Course
from grader.course.questions import ANSWER_STUB, load_questions, read_answers
from grader.errors import MarkingError
from grader.output.feedback import feedback_html, feedback_markdown
from grader.output.tables import wide_table, write_csv
from grader.output.view import display_status, view, with_written
from grader.pipeline import written
from grader.pipeline.store import open_gradebook
from grader.records import QuestionMark, Status
from grader.ship.gradescope.runner import results
from grader.tools import marking
from grader.tools.leaks import course_secrets, scan
from grader.tools.report import build_report
from grader.tools.report_page import render_report


@pytest.fixture
def course(tmp_path: Path) -> Course:
    return write_course(tmp_path)


@pytest.fixture
def book_path(course: Course, tmp_path: Path) -> Path:
    return gradebook(course, tmp_path / "gb.sqlite", class_submissions(course, tmp_path / "subs"))


def _mark(course: Course, book_path: Path, student: str, question: str, items=(),
          points=None, comment="") -> None:
    with open_gradebook(book_path) as book:
        entry = next(e for e in marking.queue(book, course, "hw1", question)
                     if e.student == student)
        marking.mark_answer(book, course, entry.key, items, points, comment, "ann",
                            0 if entry.mark is None else entry.mark.version)


def _rows(course: Course, book_path: Path) -> dict[str, object]:
    with open_gradebook(book_path) as book:
        return {r.student: r for r in marking.scored_rows(book, course)}


def test_points_are_the_checks_plus_the_marks_and_the_final_waits(course, book_path) -> None:
    rows = _rows(course, book_path)
    alice = rows["alice"]
    assert (alice.earned, alice.possible, alice.raw, alice.final) == (2.0, 5.0, 40.0, None)
    assert display_status(alice) is Status.MARKING_PENDING
    carol = rows["carol"]  # no answers: 0 each, nothing left to mark
    assert (carol.final, display_status(carol)) == (0.0, Status.OK)
    assert all(m.missing and m.earned == 0.0 for m in carol.written)
    _mark(course, book_path, "alice", "roofline", ("names_layers", "ridge"))
    assert _rows(course, book_path)["alice"].final is None  # one question left
    _mark(course, book_path, "alice", "flops", ())  # start 1, nothing taken
    alice = _rows(course, book_path)["alice"]
    assert (alice.earned, alice.raw, alice.final) == (5.0, 100.0, 100.0)
    assert display_status(alice) is Status.OK


def test_the_late_cap_applies_to_the_total(course: Course, tmp_path: Path) -> None:
    path = write_submission(tmp_path / "subs", "late", answered(course, GOOD))
    row = dataclasses.replace(row_for(course, "late", path, earned=2), cap=75.0, final=75.0)
    written_part = (QuestionMark("roofline", "", 2.0, 2.0), QuestionMark("flops", "", 1.0, 0.0))
    combined = with_written(row, written_part, course.late_policy)
    assert (combined.raw, combined.final) == (80.0, 75.0)  # min(4 of 5, cap 75)
    assert with_written(combined, written_part, course.late_policy) == combined  # idempotent
    unknown = dataclasses.replace(row, submitted_at=None, cap=None, final=None)
    combined = with_written(unknown, written_part, course.late_policy)
    assert combined.final is None and display_status(combined) is Status.TIME_UNKNOWN


def test_the_pass_rule_counts_the_combined_finals(course, book_path) -> None:
    with open_gradebook(book_path) as book:  # alice passes hw2 to hw4: hw1 decides
        for hw in ("hw2", "hw3", "hw4"):
            book.put(make_row("alice", hw, raw=100.0, final=100.0))
    table = _table(course, book_path)
    assert table.loc["alice", "hw1_status"] == "marking_pending"
    assert table.loc["alice", "hw1_final"] == "" and table.loc["alice", "hw1_raw"] == "40.00"
    assert table.loc["alice", "verdict"] == "open"  # 3 passed, hw1 waits for its marks
    _mark(course, book_path, "alice", "roofline", ("compute_bound",))
    _mark(course, book_path, "alice", "flops", ("no_reason",))
    table = _table(course, book_path)
    assert (table.loc["alice", "hw1_final"], table.loc["alice", "verdict"]) == ("40.00",
                                                                                "failed")
    _mark(course, book_path, "alice", "roofline", ("names_layers", "ridge"))
    table = _table(course, book_path)
    assert (table.loc["alice", "hw1_final"], table.loc["alice", "verdict"]) == ("80.00",
                                                                                "passed")
    assert table.loc["alice", "required_passed"] == "4"


AFTER_THE_COURSE = dt.datetime(2027, 1, 10, tzinfo=dt.UTC)  # every late window closed


def _table(course: Course, book_path: Path) -> pd.DataFrame:
    with open_gradebook(book_path) as book:
        rows = marking.scored_rows(book, course)
    path = book_path.with_suffix(".csv")
    write_csv(wide_table(course, rows, AFTER_THE_COURSE), path)
    return pd.read_csv(path, dtype=str, keep_default_na=False).set_index("student")


def test_an_unchanged_answer_keeps_its_mark_and_a_changed_one_goes_back(course, book_path,
                                                                        tmp_path) -> None:
    _mark(course, book_path, "bob", "roofline", ("compute_bound",), comment="why?")
    _mark(course, book_path, "bob", "flops", ("no_reason",))
    questions = load_questions(course, "hw1")
    resubmitted = answered(course, {**WEAK, "flops": "A multiplication and an addition."},
                           figure=None)
    # the figure changed (none now): roofline's answer changed too
    path = write_submission(tmp_path / "subs2", "bob", resubmitted,
                            "2026-11-04 11:00:00 Europe/Moscow")
    again = write_submission(tmp_path / "subs3", "bob",
                             answered(course, {**WEAK, "flops": "Different."},
                                      figure=None), "2026-11-04 11:30:00 Europe/Moscow")
    with open_gradebook(book_path) as book:
        for p, hour in ((path, 11), (again, 12)):
            row = dataclasses.replace(row_for(course, "bob", p),
                                      submitted_at=f"2026-11-04T{hour}:00:00+03:00")
            book.put(row)
            written.store_answers(book, ("bob", "hw1", row.sha256), read_answers(p, questions))
        entries = {q.id: next(e for e in marking.queue(book, course, "hw1", q.id)
                              if e.student == "bob") for q in questions}
    assert entries["roofline"].mark is None and entries["roofline"].to_mark
    assert entries["flops"].mark is None  # changed: back in the queue
    # bob hands in his first answers again: their marks come back with them
    first = write_submission(tmp_path / "subs4", "bob", answered(course, WEAK, figure=None))
    with open_gradebook(book_path) as book:
        first_row = dataclasses.replace(row_for(course, "bob", first),
                                        submitted_at="2026-11-04T13:00:00+03:00")
        book.put(first_row)
        written.store_answers(book, ("bob", "hw1", first_row.sha256),
                              read_answers(first, questions))
        flops = next(e for e in marking.queue(book, course, "hw1", "flops")
                     if e.student == "bob")
    assert flops.answer.text == WEAK["flops"] and flops.mark is not None
    assert flops.mark.items == ("no_reason",)


def test_a_mark_is_checked_against_the_rubric(course, book_path) -> None:
    with pytest.raises(MarkingError, match="no rubric item nonsense"):
        _mark(course, book_path, "alice", "roofline", ("nonsense",))
    with pytest.raises(MarkingError, match=r"within 0\.\.2"):
        _mark(course, book_path, "alice", "roofline", points=2.5)
    with pytest.raises(MarkingError, match="no written question 'nope'"):
        marking.question(course, "hw1", "nope")
    _mark(course, book_path, "alice", "roofline", points=1.5, comment="given directly")
    [roofline, _] = _rows(course, book_path)["alice"].written
    assert (roofline.earned, roofline.override, roofline.marker) == (1.5, True, "ann")


def test_editing_an_item_rescores_every_answer_that_uses_it(course, book_path) -> None:
    _mark(course, book_path, "alice", "roofline", ("names_layers", "ridge"))
    _mark(course, book_path, "erin", "roofline", ("ridge",))
    _mark(course, book_path, "bob", "roofline", ("names_layers",))
    with open_gradebook(book_path) as book:
        with pytest.raises(MarkingError, match="someone changed it"):
            marking.set_item_points(book, course, "hw1", "roofline", "ridge", 2.0, 0.5, "ann")
        marking.set_item_points(book, course, "hw1", "roofline", "ridge", 1.0, 0.5, "ann")
    rows = _rows(course, book_path)
    got = {s: rows[s].written[0].earned for s in ("alice", "erin", "bob")}
    assert got == {"alice": 1.5, "erin": 0.5, "bob": 1.0}


def test_a_removed_rubric_item_counts_nothing_and_is_flagged(course, book_path) -> None:
    _mark(course, book_path, "alice", "roofline", ("names_layers", "ridge"))
    rubric = (course.root / "solutions" / "hw1" / "rubric.toml")
    text = rubric.read_text()
    rubric.write_text("\n".join(line for line in text.splitlines()
                                if not line.startswith("ridge =")) + "\n")
    [roofline, _] = _rows(course, book_path)["alice"].written
    assert roofline.earned == 1.0 and "ridge no longer exist" in roofline.flag


def test_every_output_shows_the_marks(course, book_path) -> None:
    _mark(course, book_path, "alice", "roofline", ("names_layers",), comment="Say why, too.")
    _mark(course, book_path, "alice", "flops", ("no_reason",))
    row = _rows(course, book_path)["alice"]
    v = view(row, course)
    item = RUBRIC_DATA["question"]["roofline"]["items"]["names_layers"]["text"]
    taken = RUBRIC_DATA["question"]["flops"]["items"]["no_reason"]["text"]
    for text in (feedback_markdown(v), Page(feedback_html(v)).text):
        assert item in text and taken in text and "Say why, too." in text
        assert "Memory-bound layers" in text
        assert "3 of 5" in text or "3 / 5" in text  # checks 2 + marks 1
    report = build_report(course, list(_rows(course, book_path).values()),
                          dt.datetime(2026, 12, 20, tzinfo=dt.UTC),
                          questions=marking.all_questions(course))
    [roofline, flops] = report.homeworks[0].questions
    assert (roofline.answers, roofline.marked, roofline.missing, roofline.left) == (5, 1, 1, 3)
    assert [(i.id, i.used) for i in roofline.items] == [
        ("names_layers", 1), ("ridge", 0), ("compute_bound", 0)]
    assert roofline.distribution == ((0.0, 1), (1.0, 1))  # carol's 0, alice's 1
    assert flops.left == 2 and flops.missing == 2  # erin has no cell, carol the stub
    page = Page(render_report(report)).text
    assert "Written question roofline" in page and item in page
    gradescope = results(v, "visible", [{"id": "roofline", "title": "Memory-bound layers",
                                         "points": 2}])
    assert "are not in this score" in gradescope["output"]


def test_the_student_notebook_gets_the_stub_and_the_kit_scan_finds_the_rubric(
        course: Course) -> None:
    student = nbformat.read(course.student_notebook("hw1"), as_version=4)
    answers = [c for c in student.cells if "nncourse" in c.metadata]
    assert [c.source for c in answers] == [ANSWER_STUB, ANSWER_STUB]
    assert answers[0].metadata["nncourse"]["question"]["figure"] == "roofline-figure"
    secrets = course_secrets(course, ["hw1"])
    item = RUBRIC_DATA["question"]["roofline"]["items"]["ridge"]["text"]
    model = RUBRIC_DATA["question"]["roofline"]["model_answer"].strip().splitlines()[0]
    reference = "A multiply-accumulate is a multiplication and an addition: two FLOPs."
    kit = {"README.md": f"Hints\n{item}\n".encode(), "notes.md": f"{model}\n".encode(),
           "assignments/hw1/hw1.ipynb": course.student_notebook("hw1").read_bytes(),
           "extra.md": f"{reference}\n".encode()}
    leaks = scan(kit, secrets)
    found = {(leak.file, leak.secret.text) for leak in leaks}
    assert ("README.md", item) in found
    assert ("notes.md", model.strip()) in found
    assert ("extra.md", reference) in found
    assert not any(leak.file == "assignments/hw1/hw1.ipynb" for leak in leaks)
    assert any("rubric" in leak.secret.origin for leak in leaks if leak.file == "README.md")
