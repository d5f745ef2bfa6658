"""Gradebook rows for the tests of what reads them (the tables, the view, the feedback, the
report): one made-up row, and the fixed rows behind the golden CSV files."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

from grader.course.config import Course
from grader.course.rules import Extension
from grader.pipeline.score import Deadlines, score
from grader.records import CheckResult, GradeRow, Outcome, Status

REPO_COURSE = Path(__file__).resolve().parents[1] / "course.toml"


def make_row(student: str = "alice", assignment: str = "hw1", **changes: object) -> GradeRow:
    row = GradeRow(
        student=student, assignment=assignment,
        sha256=hashlib.sha256(f"{student}/{assignment}".encode()).hexdigest(),
        path=f"/submitted/{student}/{assignment}/{assignment}.ipynb",
        submitted_at="2026-11-04T10:00:00+03:00", time_problem="", status=Status.OK,
        detail="12 cells ran", earned=8.0, possible=10.0, raw=80.0, cap=100.0, final=80.0,
        late_reason="on time", seed=42, graded_at="2026-12-09T10:00:00+00:00", seconds=3.5,
        checks=())
    return replace(row, **changes)


def row_with_final(student: str, assignment: str, final: float | None) -> GradeRow:
    """A row whose final is ``final``; None means the submission time is unknown."""
    if final is None:
        return make_row(student, assignment, submitted_at=None, time_problem="no timestamp.txt",
                        raw=90.0, cap=None, final=None)
    return make_row(student, assignment, raw=final, final=final)


MSK_OFFSET = "+03:00"


def golden_rows(course: Course) -> list[GradeRow]:
    """Fixed rows covering every late tier (100 / 75 / 50 / 0), an extension, an unknown
    submission time,
    failed executions, a resubmission, quoting, and (with the roster) a student with nothing.
    cap, final and late_reason come from grader.pipeline.score with the course's own deadlines."""
    checks_by_raw = {
        100.0: (CheckResult("test_a", 5.0, Outcome.PASSED),
                CheckResult("test_b", 5.0, Outcome.PASSED)),
        80.0: (CheckResult("test_a", 8.0, Outcome.PASSED),
               CheckResult("test_b", 2.0, Outcome.FAILED, "expected 12, got 10")),
        50.0: (CheckResult("test_a", 5.0, Outcome.PASSED),
               CheckResult("test_b", 5.0, Outcome.FAILED, "expected 12, got 10")),
        0.0: (CheckResult("test_a", 5.0, Outcome.FAILED, "not run: kernel_died"),
              CheckResult("test_b", 5.0, Outcome.FAILED, "not run: kernel_died")),
    }
    # (student, assignment, local Moscow time or None, raw, status, detail)
    plan = [
        ("alice", "hw1", "2026-11-04 11:59:59", 80.0, "ok", "on time, last second"),
        ("alice", "hw2", "2026-11-11 12:00:00", 80.0, "ok", "D+2 tier"),
        ("alice", "hw3", "2026-11-19 12:00:00", 80.0, "ok", "last lecture day tier"),
        ("alice", "hw4", "2026-12-08 12:00:00", 100.0, "ok", "after every tier"),
        ("alice", "hw5", "2026-12-01 20:00:00", 50.0, "cell_error", "cell 3: NameError"),
        ("alice", "hw6", "2026-12-09 09:00:00", 100.0, "ok", "optional, on time"),
        ("bob", "hw1", None, 100.0, "ok", "no timestamp"),
        ("bob", "hw2", "2026-11-10 23:00:00", 0.0, "kernel_died", "memory limit"),
        ("bob", "hw3", "2026-11-18 08:00:00", 100.0, "ok", "=cmd|' /C calc'!A0"),
        ("Ёлкина, Анна", "hw1", "2026-11-03 18:00:00", 50.0, "ok", 'said "done",\nthen left'),
        ("Ёлкина, Анна", "hw2", "2026-11-11 11:00:00", 100.0, "ok", "on time"),
        ("Ёлкина, Анна", "hw3", "2026-11-18 11:00:00", 100.0, "ok", "on time"),
        ("Ёлкина, Анна", "hw4", "2026-11-25 11:00:00", 100.0, "ok", "on time"),
        ("dave", "hw1", "2026-11-04 09:00:00", 0.0, "cell_error", "first try"),
        ("dave", "hw1", "2026-11-04 11:00:00", 100.0, "ok", "resubmitted"),
        ("dave", "hw2", "2026-11-12 10:00:00", 100.0, "ok", "on time with a 48 h extension"),
    ]
    extensions = {("dave", "hw2"): Extension(extra=dt.timedelta(hours=48))}
    rows = []
    for n, (student, assignment, local, raw, status, detail) in enumerate(plan):
        a = course.assignment(assignment)
        deadlines = Deadlines(a.lecture_day, course.last_lecture_day, course.timezone,
                              course.deadline_time, course.late_policy,
                              extensions.get((student, assignment)))
        when = None if local is None else \
            dt.datetime.fromisoformat(local).replace(tzinfo=course.timezone)
        checks = checks_by_raw[raw]
        s = score(checks, when, deadlines)
        assert s.raw == raw
        rows.append(GradeRow(
            student=student, assignment=assignment,
            sha256=hashlib.sha256(f"{student}/{assignment}/{n}".encode()).hexdigest(),
            path=f"/submitted/{student}/{assignment}/{a.notebook}",
            submitted_at=None if when is None else when.isoformat(),
            time_problem="no timestamp.txt" if when is None else "",
            status=Status(status), detail=detail, earned=s.earned, possible=s.possible, raw=s.raw,
            cap=s.cap, final=s.final, late_reason=s.late_reason, seed=1000 + n,
            graded_at=f"2026-12-09T10:{n:02d}:00+00:00", seconds=1.5 + n,
            checks=tuple(checks)))
    return rows


class Page(HTMLParser):
    """The visible text of a page, its <img> sources and the tags seen."""

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


def markdown_text(markdown: str) -> str:
    """The Markdown feedback as a reader of the rendered page sees its words: backslash escapes
    undone (grader.text.markdown_inline)."""
    return re.sub(r"\\([\\`\[\]<>#+\-=|*_.)])", r"\1", markdown)
