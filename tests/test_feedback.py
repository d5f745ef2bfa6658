"""Tests for grader/output/feedback.py: what a student reads about one graded submission, as
Markdown and as an HTML page (read as text: its visible text, through html.parser)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from rows import REPO_COURSE, Page, golden_rows, make_row, markdown_text

from grader.course.config import Course, load_course
from grader.course.notebook import defined_names
from grader.course.rules import LatePolicy
from grader.output.feedback import feedback_html, feedback_markdown, write_feedback
from grader.output.view import view
from grader.pipeline.checking import describe
from grader.records import MAX_CELL_ERRORS, CellError, CheckResult, GradeRow, Outcome, Status


@pytest.fixture(scope="module")
def course() -> Course:
    return load_course(REPO_COURSE)


def both(row: GradeRow, course: Course) -> tuple[str, str]:
    """The Markdown feedback, and the HTML page's visible text."""
    v = view(row, course)
    return markdown_text(feedback_markdown(v)), Page(feedback_html(v)).text


def hw1_row(course: Course, **changes: object) -> GradeRow:
    """A late hw1 submission graded on every hidden check, the first two failing."""
    infos = describe(course.hidden_checks("hw1"))
    results = [i.result(Outcome.PASSED, "passed-message-never-shown") for i in infos]
    results[0] = infos[0].result(Outcome.FAILED,
                                 "expected 1728 MACs\nyou returned <script>alert(1)</script>")
    results[1] = infos[1].result(Outcome.ERROR, "grader error: the call ran past 20 s")
    earned = sum(r.earned for r in results)
    possible = sum(r.points for r in results)
    row = make_row(status=Status.CELL_ERROR, detail="1 cell(s) raised an error; first: cell 4",
                   checks=tuple(results), earned=earned,
                   possible=possible, raw=round(100 * earned / possible, 2), cap=75.0,
                   late_reason="Submitted 2026-11-05 10:00:00 (Europe/Moscow), after the D+1 "
                               "11:59 deadline, so the cap is 75 %.")
    return replace(row, **{"final": min(row.raw, 75.0), **changes})


def test_feedback_names_each_check_by_its_title_and_shows_no_check_code(course: Course) -> None:
    row = hw1_row(course)
    html = feedback_html(view(row, course))
    page = Page(html)
    markdown, _ = both(row, course)
    titles = {c.title for c in row.checks}
    assert len(row.checks) > 10 and all(titles)
    for check in row.checks:
        assert check.title in page.text and check.title in markdown
    groups = len({c.task for c in row.checks})
    assert page.tags.count("tr") == 1 + groups + len(row.checks)  # a header, a row per
    # function the checks are about, a row per check
    assert "expected 1728 MACs" in page.text and "you returned <script>" in page.text
    assert "<script>" not in html  # a student's error text is escaped, never markup
    assert "grader error: the call ran past 20 s" in page.text
    assert "passed-message-never-shown" not in page.text + markdown
    # nothing of the hidden checks' code: no line of their source but the titles
    for source in sorted(course.hidden_checks("hw1").glob("*.py")):
        for line in source.read_text(encoding="utf-8").splitlines():
            line = line.strip().strip('"').strip()
            if len(line) >= 12 and not any(line in title for title in titles):
                assert line not in page.text, f"{source.name}: {line!r} shown to the student"
                assert line not in markdown, f"{source.name}: {line!r} shown to the student"
        assert source.stem not in page.text + markdown  # not even the file or function name


def test_a_check_title_is_its_docstrings_whole_first_paragraph(course: Course) -> None:
    # a docstring's first line alone may stop mid-sentence: the title is never cut there
    for info in describe(course.hidden_checks("hw1")):
        assert "\n" not in info.title and "  " not in info.title
        assert info.title.rstrip().endswith((".", ")", ":", "?", "!")) or info.title == info.name


def test_feedback_explains_the_status_and_the_cap(course: Course) -> None:
    row = hw1_row(course)
    for text in both(row, course):
        assert "At least one cell raised an error" in text
        assert (f"after the D+1 11:59 deadline, so the cap is 75 %. Final score = the smaller of "
                f"raw {row.raw:.2f} % and cap 75 % = {row.final:.2f} %.") in text
    scaled = replace(row, final=row.raw * 0.75)
    for text in both(scaled, replace(course, late_policy=LatePolicy.SCALE)):
        assert (f"Final score = raw {row.raw:.2f} % × cap 75 % / 100 = {row.raw * 0.75:.2f} %"
                in text)


def test_feedback_names_late_reason_and_failing_messages(course: Course) -> None:
    checks = (CheckResult("test_params", 2.0, Outcome.PASSED, "PASSED-MESSAGE-NOT-SHOWN",
                          "Parameters of a Linear layer."),
              CheckResult("test_macs", 3.0, Outcome.FAILED,
                          "Conv2d(3, 8, k=3): expected 1728 MACs\nyou returned 3456"),
              CheckResult("test_timing", 1.0, Outcome.ERROR, "grader error: TimeoutError"))
    row = make_row(late_reason="Submitted 2026-11-05 10:00:00 (Europe/Moscow), cap 75 %.",
                   checks=checks, earned=2.0, possible=6.0, raw=33.33, cap=75.0, final=33.33)
    for text in both(row, course):
        assert "Submitted 2026-11-05 10:00:00 (Europe/Moscow), cap 75 %." in text
        assert "Conv2d(3, 8, k=3): expected 1728 MACs" in text and "you returned 3456" in text
        assert "grader error: TimeoutError" in text
        # a check is named by its title; one stored without a title by its name
        assert "Parameters of a Linear layer." in text and "test_params" not in text
        assert "test_macs" in text and "test_timing" in text
        assert "PASSED-MESSAGE-NOT-SHOWN" not in text
        assert "33.33" in text


def test_times_are_the_courses_with_the_zone_named(course: Course) -> None:
    row = make_row(submitted_at="2026-11-04T10:00:00+03:00", graded_at="2026-12-09T10:00:00+00:00")
    for text in both(row, course):
        assert "2026-11-04 10:00 Europe/Moscow" in text  # as submitted, Moscow time
        assert "2026-12-09 13:00 Europe/Moscow" in text  # graded at 10:00 UTC
        assert "+00:00" not in text and "UTC" not in text


@pytest.mark.parametrize(
    ("status", "submitted_at", "words"),
    [
        pytest.param("ok", None, "the time you handed it in is not known", id="time-unknown"),
        pytest.param("kernel_died", "2026-11-04T10:00:00+03:00", "stopped (a crash",
                     id="kernel-died"),
        pytest.param("grader_error", "2026-11-04T10:00:00+03:00", "This is not your fault",
                     id="grader-error"),
        pytest.param("kernel_lost", "2026-11-04T10:00:00+03:00",
                     "stopped answering while the checks were calling it", id="kernel-lost"),
        pytest.param("checks_timeout", "2026-11-04T10:00:00+03:00",
                     "the checks ran past the time allowed", id="checks-timeout"),
    ],
)
def test_every_status_is_put_in_words(status: str, submitted_at: str | None, words: str,
                                      course: Course) -> None:
    row = make_row(status=Status(status), submitted_at=submitted_at,
                   cap=None if submitted_at is None else 100.0,
                   final=None if submitted_at is None else 80.0)
    markdown, html = both(row, course)
    for text in (markdown, html):
        assert words in text
    if submitted_at is None:
        assert "final score pending" in html and "Your final score is pending" in html
        assert "pending (submission time unknown)" in markdown
        assert "time_unknown" in markdown  # the status shown is the row's displayed one


def test_every_cell_error_is_listed_once_and_the_rest_counted(course: Course) -> None:
    errors = tuple(CellError(i, "NameError", f"name 'x{i}' is not defined")
                   for i in range(2, 2 + MAX_CELL_ERRORS))
    row = make_row(status=Status.CELL_ERROR, cell_errors=errors, more_cell_errors=3)
    for text in both(row, course):
        for error in errors:
            assert text.count(f"{error} ") + text.count(f"{error}\n") == 1, error
        assert "... and 3 more" in text
        assert "cell_error" in text
    assert view(make_row(), course).cell_errors == ()


def test_feedback_is_written_for_every_counted_submission(course: Course, tmp_path: Path) -> None:
    written = write_feedback(course, golden_rows(course), tmp_path)
    assert tmp_path / "dave" / "hw1.md" in written
    assert tmp_path / "Ёлкина, Анна" / "hw4.md" in written
    assert len(written) == 15  # one per counted submission; dave's first hw1 try is not one
    for markdown in written:
        assert markdown.with_suffix(".html").is_file()
    assert "resubmitted" in (tmp_path / "dave" / "hw1.html").read_text(encoding="utf-8")
    assert "resubmitted" in (tmp_path / "dave" / "hw1.md").read_text(encoding="utf-8")


def test_checks_are_grouped_by_the_function_they_check_in_the_notebooks_order(
        course: Course) -> None:
    v = view(hw1_row(course), course)
    tasks = [task for task, _ in v.groups]
    assert len(tasks) == len(set(tasks)) > 5  # each function once
    notebook = defined_names(course.student_notebook("hw1"))
    assert [t for t in tasks if t] == sorted((t for t in tasks if t), key=notebook.index)
    markdown = feedback_markdown(v)
    positions = [markdown.index(f"### `{task}`") for task in tasks if task]
    assert positions == sorted(positions)
