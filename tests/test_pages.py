"""Tests for grader/pages.py: the students' HTML feedback and the instructor's report page.

The feedback is read as text (the HTML's visible text, through html.parser). The report page is
opened in headless Chromium and its screenshot checked to be a rendered page; its numbers are
tested as data in tests/test_report.py.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image, ImageStat
from test_export import REPO_COURSE, golden_rows, make_row

from grader.check import describe
from grader.config import Course, load_course
from grader.pages import (
    BAR,
    cell_errors,
    check_summaries,
    render_feedback,
    render_report,
    write_html_feedback,
)
from grader.records import CheckResult, GradeRow, Outcome, Status
from grader.report import build_report
from grader.rules import LatePolicy
from grader.similarity import HomeworkSimilarity, SharedLine, SimilarPair


class _Page(HTMLParser):
    """The visible text of a page, its <img> sources, table rows and tags seen."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.chunks: list[str] = []
        self.images: list[str] = []
        self.tags: list[str] = []
        self._skip = 0
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self._skip += tag in ("style", "title")
        if tag == "img":
            self.images.append(dict(attrs).get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("style", "title")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.chunks.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.chunks).split())


@pytest.fixture(scope="module")
def course() -> Course:
    return load_course(REPO_COURSE)


# -- feedback ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hw1_summaries(course: Course) -> dict[str, str]:
    return check_summaries(course, ["hw1"])["hw1"]


def hw1_row(course: Course, **changes: object) -> GradeRow:
    """A late hw1 submission graded on every hidden check, the first two failing."""
    infos = describe(course.hidden_checks("hw1"))
    results = [CheckResult(i.name, i.points, Outcome.PASSED, "passed-message-never-shown")
               for i in infos]
    results[0] = CheckResult(infos[0].name, infos[0].points, Outcome.FAILED,
                             "expected 1728 MACs\nyou returned <script>alert(1)</script>")
    results[1] = CheckResult(infos[1].name, infos[1].points, Outcome.ERROR,
                             "grader error: the call ran past 20 s")
    earned = sum(r.earned for r in results)
    possible = sum(r.points for r in results)
    row = make_row(status=Status.CELL_ERROR, detail="1 cell(s) raised an error; first: cell 4",
                   checks=GradeRow.encode_checks(tuple(results)), earned=earned,
                   possible=possible, raw=round(100 * earned / possible, 2), cap=75.0,
                   late_reason="Submitted 2026-11-05 10:00:00 (Europe/Moscow), after the D+1 "
                               "11:59 deadline, so the cap is 75 %.")
    final = min(row.raw, 75.0)
    changes.setdefault("final", final)
    return GradeRow(**{**row.__dict__, **changes})


def test_feedback_names_each_check_by_its_summary_and_shows_no_check_code(
        course: Course, hw1_summaries: dict[str, str]) -> None:
    row = hw1_row(course)
    html = render_feedback(row, "Measures of effectiveness", LatePolicy.CAP, hw1_summaries)
    page = _Page(html)
    results = row.check_results
    assert len(hw1_summaries) == len(results) > 10
    for r in results:
        assert hw1_summaries[r.name] in page.text
    assert page.tags.count("tr") == 1 + len(results)  # a header and one row per check
    assert "expected 1728 MACs" in page.text and "you returned <script>" in page.text
    assert "<script>" not in html  # a student's error text is escaped, never markup
    assert "grader error: the call ran past 20 s" in page.text
    assert "passed-message-never-shown" not in page.text
    # nothing of the hidden checks' code: no line of their source but the summaries
    summaries = set(hw1_summaries.values())
    for source in sorted(course.hidden_checks("hw1").glob("*.py")):
        for line in source.read_text(encoding="utf-8").splitlines():
            line = line.strip().strip('"').strip()
            if len(line) >= 12 and line not in summaries:
                assert line not in page.text, f"{source.name}: {line!r} shown to the student"
        assert source.stem not in page.text  # not even the check's file or function name


def test_feedback_explains_the_status_and_the_cap(course: Course) -> None:
    row = hw1_row(course)
    text = _Page(render_feedback(row, "T", LatePolicy.CAP, {})).text
    assert "At least one cell raised an error" in text
    assert (f"after the D+1 11:59 deadline, so the cap is 75 %. Final score = the smaller of "
            f"raw {row.raw:.2f} % and cap 75 % = {row.final:.2f} %.") in text
    scaled = GradeRow(**{**row.__dict__, "final": row.raw * 0.75})
    text = _Page(render_feedback(scaled, "T", LatePolicy.SCALE, {})).text
    assert f"Final score = raw {row.raw:.2f} % × cap 75 % / 100 = {row.raw * 0.75:.2f} %" in text


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
def test_every_status_is_put_in_words(status: str, submitted_at: str | None,
                                      words: str) -> None:
    row = make_row(status=Status(status), submitted_at=submitted_at,
                   cap=None if submitted_at is None else 100.0,
                   final=None if submitted_at is None else 80.0)
    text = _Page(render_feedback(row, "T", LatePolicy.CAP, {})).text
    assert words in text
    if submitted_at is None:
        assert "final score pending" in text and "Your final score is pending" in text


def test_every_cell_error_is_listed_once() -> None:
    errors = [{"cell": 4, "ename": "ValueError", "message": "not enough values to unpack"},
              {"cell": 9, "ename": "NameError", "message": "name 'x' is not defined"}]
    row = make_row(status=Status.CELL_ERROR, cell_errors=json.dumps(errors))
    assert cell_errors(row) == ("cell 4: ValueError: not enough values to unpack",
                                "cell 9: NameError: name 'x' is not defined")
    text = _Page(render_feedback(row, "T", LatePolicy.CAP, {})).text
    for line in cell_errors(row):
        assert text.count(line) == 1
    assert cell_errors(make_row()) == ()  # rows without the field: none listed


def test_html_feedback_is_written_beside_the_markdown(course: Course, tmp_path: Path) -> None:
    written = write_html_feedback(course, golden_rows(course), tmp_path, {})
    assert tmp_path / "dave" / "hw1.html" in written
    assert tmp_path / "Ёлкина, Анна" / "hw4.html" in written
    assert len(written) == 15  # one per counted submission; dave's first hw1 try is not one
    assert "resubmitted" in (tmp_path / "dave" / "hw1.html").read_text(encoding="utf-8")


# -- the report page ---------------------------------------------------------------------------


def report_html(course: Course) -> str:
    pair = SimilarPair("alice", "dave", 0.9, 0.8,
                       (SharedLine(3, "    return (w.abs() > t).float()"),),
                       (SharedLine(5, "    return (v.abs() > c).float()"),))
    similarity = (HomeworkSimilarity("hw1", 0.5, ("alice", "bob", "dave"), (pair,),
                                     (("frank", "file gone: /x/hw1.ipynb"),), "template"),)
    report = build_report(course, golden_rows(course), dt.datetime(2026, 12, 20, tzinfo=dt.UTC),
                          similarity=similarity, roster=["carol"])
    return render_report(report)


def test_the_report_is_one_self_contained_page(course: Course) -> None:
    html = report_html(course)
    page = _Page(html)
    # one figure per homework with a submission (all six here) and the pass table's
    assert len(page.images) == 7
    for src in page.images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        with Image.open(io.BytesIO(base64.b64decode(src[len(prefix):]))) as figure:
            figure.verify()
            assert figure.format == "PNG" and figure.size[0] >= 400
    assert "script" not in page.tags and "link" not in page.tags
    assert "http://" not in html and "https://" not in html
    assert "file gone: /x/hw1.ipynb" in page.text  # a notebook that is gone is said so


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs it")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def test_the_report_renders_in_chromium(course: Course, tmp_path: Path) -> None:
    browser = chromium()
    page = tmp_path / "report.html"
    page.write_text(report_html(course), encoding="utf-8")
    shot = tmp_path / "report.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", "--window-size=1280,2400",
                        f"--screenshot={shot}", page.as_uri()],
                       check=True, capture_output=True, timeout=180)
    with Image.open(shot) as image:
        rgb = image.convert("RGB")
    assert rgb.size == (1280, 2400)
    # not blank: text, tables and figures make the grey levels vary
    assert ImageStat.Stat(rgb.convert("L")).stddev[0] > 20
    # the figures are drawn: the bars' colour covers a real area (a broken image has none)
    bar = tuple(int(BAR[i:i + 2], 16) for i in (1, 3, 5))
    bar_pixels = sum(count for count, colour in rgb.getcolors(maxcolors=1 << 20)
                     if max(abs(c - b) for c, b in zip(colour, bar, strict=True)) <= 6)
    assert bar_pixels > 5000, bar_pixels
