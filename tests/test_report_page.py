"""Tests for grader/tools/report_page.py: the instructor's report as one page.

The page is opened in headless Chromium and its screenshot checked to be a rendered page; its
numbers are tested as data in tests/test_report.py.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from PIL import Image, ImageStat
from rows import REPO_COURSE, Page, golden_rows

from grader.course.config import Course, load_course
from grader.tools.report import build_report
from grader.tools.report_page import BAR, render_report
from grader.tools.similarity import HomeworkSimilarity, SharedLine, SimilarPair


@pytest.fixture(scope="module")
def course() -> Course:
    return load_course(REPO_COURSE)


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
    page = Page(html)
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
