"""Tests for grader/output/view.py: one view of a graded row, and every page rendered from it.

The view is what each output shows: a row of every status goes through the Markdown feedback,
the HTML feedback, Gradescope's results.json and the report page, and each says the same facts
(the status and its words, the final score, the late rule, the cells that raised, every check by
its title with its points and message).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest
from rows import REPO_COURSE, Page, make_row, markdown_text

from grader.course.config import Course, load_course
from grader.output.feedback import feedback_html, feedback_markdown
from grader.output.view import STATUS_WORDS, RowView, display_status, view
from grader.records import CellError, CheckResult, GradeRow, Outcome, Status
from grader.ship.gradescope.runner import results
from grader.tools.report import RAN, build_report
from grader.tools.report_page import render_report

# every status a grading run stores (the exports add time_unknown, missing, marking_pending)
GRADED = [s for s in Status
          if s not in (Status.TIME_UNKNOWN, Status.MISSING, Status.MARKING_PENDING)]


@pytest.fixture(scope="module")
def course() -> Course:
    return load_course(REPO_COURSE)


def graded_row(status: Status, submitted_at: str | None) -> GradeRow:
    checks = (CheckResult("test_hw1::test_counts", 2.0, Outcome.PASSED, "", "Params of a Linear."),
              CheckResult("test_hw1::test_macs", 3.0, Outcome.FAILED, "expected 1728, got 3456",
                          "MACs of a grouped Conv2d, bias excluded."),
              CheckResult("test_hw1::test_timing", 1.0, Outcome.ERROR, "grader error: boom",
                          "Latency is the median of warm runs."))
    known = submitted_at is not None
    return make_row(status=status, detail=f"the detail of {status.value}",
                    submitted_at=submitted_at, checks=checks, earned=2.0, possible=6.0,
                    raw=33.33, cap=75.0 if known else None, final=33.33 if known else None,
                    late_reason="Submitted after the D+1 deadline, so the cap is 75 %.",
                    cell_errors=(CellError(4, "ValueError", "not enough values"),))


def outputs(v: RowView, course: Course, row: GradeRow) -> dict[str, str]:
    """The text of each output a person reads of this row."""
    gradescope = results(v, "visible")
    report = build_report(course, [row], dt.datetime(2026, 12, 20, tzinfo=dt.UTC))
    return {
        "markdown": markdown_text(feedback_markdown(v)),
        "html": Page(feedback_html(v)).text,
        "gradescope": gradescope["output"] + "\n" + "\n".join(
            f"{t['name']} {t['score']:g}/{t['max_score']:g} {t['output']}"
            for t in gradescope["tests"]),
        "report": Page(render_report(report)).text,
    }


def test_every_status_has_words() -> None:
    assert set(STATUS_WORDS) == set(Status)


@pytest.mark.parametrize("submitted_at", ["2026-11-05T10:00:00+03:00", None],
                         ids=["time-known", "time-unknown"])
@pytest.mark.parametrize("status", GRADED, ids=[s.value for s in GRADED])
def test_every_output_says_the_same_facts(course: Course, status: Status,
                                          submitted_at: str | None) -> None:
    row = graded_row(status, submitted_at)
    v = view(row, course)
    assert v.status is display_status(row)
    texts = outputs(v, course, row)
    student_pages = {k: texts[k] for k in ("markdown", "html", "gradescope")}
    for name, text in student_pages.items():
        assert v.status.value in text, name
        assert " ".join(v.status_words.split()) in " ".join(text.split()), name
        assert " ".join(v.cap_words.split()) in " ".join(text.split()), name
        assert "cell 4: ValueError: not enough values" in text, name
        for check in v.checks:
            assert check.title in text, (name, check.title)
            if check.message:
                assert check.message in text, (name, check.message)
        assert "test_hw1::" not in text, name  # checks by title, never by their pytest id
    for name in ("markdown", "html"):
        assert ("pending" if row.final is None else "33.33 %") in student_pages[name], name
    # the report: the status as shown, and, for a notebook that did not run, its words
    assert v.status.value in texts["report"]
    if row.status not in RAN:
        assert " ".join(STATUS_WORDS[row.status].split()) in texts["report"]
        assert row.detail in texts["report"]


def test_a_check_without_a_stored_title_is_shown_by_its_name(course: Course) -> None:
    row = make_row(checks=(CheckResult("test_hw1::test_old", 1.0, Outcome.PASSED),))
    assert view(row, course).checks[0].title == "test_hw1::test_old"


def test_a_homework_the_course_no_longer_has_is_shown_by_its_id(course: Course) -> None:
    assert view(replace(make_row(), assignment="hw9"), course).title == "hw9"
