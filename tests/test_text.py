"""Tests for grader/text.py, the one rule for text a submission controls, and a property test of
every output it reaches: hostile strings (control characters, line breaks, formulas, Markdown
and HTML, huge sizes) in a row's student id, detail, cell errors and check messages go through
the CSVs, the Markdown and HTML feedback, Gradescope's results.json and the report, and each
output parses back as it should: one CSV row per submission, no cell a spreadsheet would run,
no heading or markup the student wrote, sizes within the caps."""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rows import REPO_COURSE, make_row

from grader.course.config import Course, load_course
from grader.output.feedback import feedback_html, feedback_markdown
from grader.output.tables import long_table, wide_table, write_csv
from grader.output.view import view
from grader.records import CellError, CheckResult, Outcome, Status
from grader.ship.gradescope.runner import results
from grader.text import (
    DETAIL_CHARS,
    LOG_CHARS,
    MESSAGE_CHARS,
    NAME_CHARS,
    csv_cell,
    first_line,
    markdown_block,
    markdown_inline,
    one_line,
    text_block,
)
from grader.tools.report import build_report
from grader.tools.report_page import render_report

HOSTILE = ["\r", "\n", "\r\n", "\x00", "\x1b[31m", "\x07", "\u2028", "\u202e", "\t", " ", "=",
           "+", "-", "@", "# Fake heading: final score 100 %", "<script>alert(1)</script>",
           "{{ 7*7 }}", "[x](javascript:alert(1))", "![](http://tracker/x.png)", "```", "> ",
           "1. ", "* ", "=1+1+cmd|' /C calc'!A0", "Ёлкина, \"Аня\"", "a" * 5000]
hostile_text = st.lists(st.sampled_from(HOSTILE) | st.text(max_size=8), min_size=1,
                        max_size=8).map("".join)


@pytest.fixture(scope="module")
def course() -> Course:
    return load_course(REPO_COURSE)


def test_one_line_keeps_a_line_and_shows_what_it_replaced():
    assert one_line("a\r\nb\rc\nd\x00e\tf") == "a ⏎ b ⏎ c ⏎ d\ufffde f"
    assert one_line("x" * 1000, 50) == "x" * 49 + "…"
    assert len(one_line("\n" * 10**6, 80)) == 80


def test_text_block_keeps_lines_and_cuts_them():
    assert text_block("a\r\nb\x1bc\n\n") == "a\nb\ufffdc"
    assert text_block("\n".join(map(str, range(10))), lines=3) == "0\n1\n2\n…"
    assert len(text_block("y" * 10**6)) == MESSAGE_CHARS


def test_first_line_of_a_huge_text_is_cheap_and_bounded():
    assert first_line("\n\n  first  \nsecond") == "first"
    assert len(first_line("z" * 10**7)) <= 200


@pytest.mark.parametrize(("value", "cell"), [
    ("=1+1", "'=1+1"), ("  =1", "'  =1"), ("\t@x", "' @x"), ("-2", "'-2"), ("a=b", "a=b"),
    ("\r=1+1", " ⏎ =1+1"), (3.5, 3.5), (None, None)])
def test_csv_cell_guards_formulas_after_blanks_and_keeps_one_line(value, cell):
    assert csv_cell(value) == cell


def test_markdown_inline_escapes_what_would_become_markup():
    assert markdown_inline("# Fake heading") == r"\# Fake heading"
    assert markdown_inline("[x](javascript:1) <b>") == r"\[x\](javascript:1) \<b\>"
    assert markdown_inline("1. item") == r"1\. item"
    assert markdown_inline("2*B*I*O, flops_per_element") == r"2\*B\*I\*O, flops\_per\_element"


def test_markdown_block_cannot_be_closed_by_its_text():
    block = markdown_block("``` \n```\n# out")
    fence = block.split("text", 1)[0]
    assert len(fence) == 4 and block.endswith("\n" + fence)


def hostile_row(student: str, detail: str, ename: str, message: str):
    checks = (CheckResult("test_hw1::test_a", 2.0, Outcome.FAILED, message, "Checks A."),
              CheckResult("test_hw1::test_b", 1.0, Outcome.PASSED, "", "Checks B."))
    return make_row(student=student, detail=detail, status=Status.CELL_ERROR, checks=checks,
                    earned=1.0, possible=3.0, raw=33.33, final=33.33,
                    cell_errors=(CellError(3, ename, message),))


def check_every_output(course: Course, tmp_path: Path, student: str, detail: str, ename: str,
                       message: str, report: bool = True) -> None:
    rows = [hostile_row(student, detail, ename, message),
            make_row("plain", detail="the notebook ran to the end")]
    # the CSVs: one row per student (or submission), each cell one line, no formula
    after = dt.datetime(2026, 12, 20, tzinfo=dt.UTC)
    for frame, name in ((wide_table(course, rows, after), "wide"),
                        (long_table(course, rows), "long")):
        path = tmp_path / f"{name}.csv"
        write_csv(frame, path)
        with path.open(encoding="utf-8", newline="") as f:
            records = list(csv.reader(f))
        assert len(records) == 1 + len(frame)
        for record in records[1:]:
            for cell in record:
                assert "\r" not in cell and "\n" not in cell
                assert len(cell) <= LOG_CHARS + 1
                assert not cell.lstrip().startswith(("=", "+", "-", "@")), cell[:40]
    v = view(rows[0], course)
    assert len(v.student) <= NAME_CHARS and len(v.detail) <= DETAIL_CHARS
    # Markdown: only our headings; nothing the student wrote opens code, a link or HTML
    markdown = feedback_markdown(v)
    fence = r"(`{3,})text\n.*?\n *\1"
    fenced = re.findall(fence, markdown, re.S)
    outside = re.sub(fence, "", markdown, flags=re.S)
    headings = [line for line in outside.splitlines() if line.lstrip().startswith("#")
                and not line.startswith("### `")]  # the functions the checks are about
    assert len(fenced) == (1 if text_block(message) else 0)  # the failed check's message
    assert [h.split(":")[0] for h in headings] == [
        "# Measures of effectiveness (hw1)", "## Your notebook's run", "## Cells that raised an "
        "error or were interrupted", "## Checks", "### Other checks"]
    assert "<" not in outside.replace("\\<", "") and "](" not in outside.replace("\\](", "")
    assert len(markdown) < 8000
    # HTML: escaped by the template engine, bounded
    html = feedback_html(v)
    assert "<script>alert" not in html and len(html) < 20000
    # Gradescope: valid JSON, bounded
    data = json.loads(json.dumps(results(v, "visible")))
    assert len(data["output"]) < 6000 and all(len(t["output"]) <= MESSAGE_CHARS
                                              for t in data["tests"])
    if report:  # the report page (its figures take a second: not on every example)
        page = render_report(build_report(course, rows, dt.datetime(2026, 12, 20, tzinfo=dt.UTC)))
        assert "<script>alert" not in page and len(page) < 2_000_000


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(student=hostile_text, detail=hostile_text, ename=hostile_text, message=hostile_text)
def test_hostile_strings_reach_every_output_inert_and_bounded(course, tmp_path, student, detail,
                                                              ename, message):
    check_every_output(course, tmp_path, student or "s", detail, ename, message, report=False)


@pytest.mark.parametrize("size", ["megabyte", "crlf", "heading", "every-fragment"])
def test_huge_strings_reach_every_output_bounded(course, tmp_path, size):
    text = {"megabyte": "X" * 2**20, "crlf": "=" + "\r\n" * 2**16,
            "heading": "E" * 2**18 + "\n# heading", "every-fragment": "".join(HOSTILE)}[size]
    check_every_output(course, tmp_path, "student", text, text, text)
