"""Tests for grader/tools/report.py: every number of the instructor's report, asserted as data.

The gradebook is the golden one of tests/test_tables.py (every late tier, an extension, an
unknown time, a dead kernel, a resubmission), with carol on the roster and nothing submitted.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest
from rows import REPO_COURSE, golden_rows, make_row

from grader.course.config import Course, load_course
from grader.course.rules import Extension
from grader.records import CheckResult, Outcome, Status
from grader.tools.report import TOP_FAILED, HomeworkReport, Report, build_report

AFTER_THE_COURSE = dt.datetime(2026, 12, 20, 12, 0, tzinfo=dt.UTC)
ROSTER = ["carol"]
STUDENTS = ("alice", "bob", "carol", "dave", "Ёлкина, Анна")


@pytest.fixture(scope="module")
def course() -> Course:
    return load_course(REPO_COURSE)


@pytest.fixture(scope="module")
def report(course: Course) -> Report:
    # hw1's test_b was stored with its title; the other rows' checks without one
    rows = [replace(r, checks=tuple(replace(c, title="B is right.") if c.name == "test_b"
                                    else c for c in r.checks)) if r.assignment == "hw1" else r
            for r in golden_rows(course)]
    return build_report(course, rows, AFTER_THE_COURSE, roster=ROSTER)


def homework(report: Report, assignment: str) -> HomeworkReport:
    return next(h for h in report.homeworks if h.id == assignment)


def test_scores_per_homework(report: Report) -> None:
    hw1 = homework(report, "hw1")
    # by student: alice 80, bob 100 (time unknown), dave's resubmission 100, Ёлкина 50
    assert hw1.raw == (80.0, 100.0, 100.0, 50.0)
    assert hw1.final == (80.0, 100.0, 50.0)
    assert (hw1.submitted, hw1.pending, hw1.missing) == (4, 1, 1)
    assert (hw1.raw_mean, hw1.raw_median, hw1.final_median) == (82.5, 90.0, 80.0)
    assert homework(report, "hw4").final == (0.0, 100.0)  # alice past every tier
    hw6 = homework(report, "hw6")
    assert (hw6.required, hw6.raw, hw6.missing) == (False, (100.0,), 4)
    assert [h.id for h in report.homeworks] == ["hw1", "hw2", "hw3", "hw4", "hw5", "hw6"]
    assert report.required == ("hw1", "hw2", "hw3", "hw4", "hw5")


def test_statuses_counted_as_they_occur(report: Report) -> None:
    assert homework(report, "hw1").statuses == (("ok", 3), ("missing", 1), ("time_unknown", 1))
    assert homework(report, "hw2").statuses == (("ok", 3), ("kernel_died", 1), ("missing", 1))
    assert homework(report, "hw5").statuses == (("missing", 4), ("cell_error", 1))


def test_a_check_stage_that_ran_out_of_time_is_counted_as_trouble(course: Course) -> None:
    rows = [make_row("ann", status=Status.CHECKS_TIMEOUT, detail="the checks ran out of time"),
            make_row("ben")]
    hw1 = homework(build_report(course, rows, AFTER_THE_COURSE), "hw1")
    assert hw1.statuses == (("checks_timeout", 1), ("ok", 1))
    assert [(t.student, t.status) for t in hw1.trouble] == [("ann", "checks_timeout")]


def test_checks_most_often_failed(report: Report) -> None:
    hw1 = homework(report, "hw1")
    # test_b failed for alice (80) and Ёлкина (50); test_a failed for nobody
    assert [(c.name, c.title, c.failed, c.graded, c.share) for c in hw1.failed_checks] == [
        ("test_b", "B is right.", 2, 4, 0.5)]
    hw2 = homework(report, "hw2")
    # bob's dead kernel failed both without running them: counted apart, not as failures of
    # the checks; alice's 80 failed test_b; no title: the name stands
    assert [(c.title, c.failed, c.errors, c.graded) for c in hw2.failed_checks] == [
        ("test_b", 1, 0, 3)]
    assert hw2.not_checked == (("kernel_died", 1),)


def test_failed_checks_are_ranked_and_cut(course: Course) -> None:
    checks = [CheckResult(f"test_{i:02d}", 1.0, Outcome.FAILED if i < 12 else Outcome.PASSED)
              for i in range(14)]
    broken = [*checks[:-1], CheckResult("test_13", 1.0, Outcome.ERROR, "grader error: x")]
    rows = [make_row("ann", checks=tuple(checks)),
            make_row("ben", checks=tuple(broken))]
    failed = homework(build_report(course, rows, AFTER_THE_COURSE), "hw1").failed_checks
    assert len(failed) == TOP_FAILED
    assert [(c.name, c.failed, c.errors) for c in failed[:3]] == [
        ("test_00", 2, 0), ("test_01", 2, 0), ("test_02", 2, 0)]
    assert ("test_13", 1, 1) not in [(c.name, c.failed, c.errors) for c in failed]  # 1/2 < 2/2


def test_late_submissions_by_tier(report: Report) -> None:
    late = {h.id: [(g.label, g.students) for g in h.late] for h in report.homeworks}
    assert late["hw1"] == [("by D+1 11:59 (cap 100 %)", ("alice", "dave", "Ёлкина, Анна")),
                           ("time unknown", ("bob",))]
    # dave handed hw2 in on D+2 with a 48 h extension: cap 100
    assert late["hw2"] == [("by D+1 11:59 (cap 100 %)", ("bob", "dave", "Ёлкина, Анна")),
                           ("by D+2 11:59 (cap 75 %)", ("alice",))]
    assert late["hw3"] == [("by D+1 11:59 (cap 100 %)", ("bob", "Ёлкина, Анна")),
                           ("by last lecture day 11:59 (cap 50 %)", ("alice",))]
    assert late["hw4"] == [("by D+1 11:59 (cap 100 %)", ("Ёлкина, Анна",)),
                           ("past every deadline (cap 0 %)", ("alice",))]


def test_notebooks_that_did_not_run(report: Report) -> None:
    trouble = {h.id: [(t.student, t.status, t.detail) for t in h.trouble]
               for h in report.homeworks if h.trouble}
    # alice's hw5 cell error is hers, not trouble; dave's first hw1 try does not count
    assert trouble == {"hw2": [("bob", "kernel_died", "memory limit")]}
    assert report.trouble == 1


def test_grading_time_counts_every_graded_row(report: Report) -> None:
    timing = homework(report, "hw1").timing
    # rows 0, 6, 9, 13 and 14 of the golden plan (seconds = 1.5 + row number); dave's first
    # try was graded too, so it counts
    assert timing is not None
    assert (timing.runs, timing.median_s, timing.max_s, timing.total_s) == (5, 10.5, 15.5, 49.5)


def test_pass_table_after_the_course(report: Report) -> None:
    table = {s.student: (s.passed, s.pending, s.still_open, s.words)
             for s in report.standings}
    assert tuple(table) == STUDENTS
    assert table == {
        "alice": (4, 0, 0, "passed"),  # 80, 75, 50, 0, 50
        "bob": (1, 1, 0, "cannot pass"),  # hw3 only; hw1's time unknown cannot make up 3
        "carol": (0, 0, 0, "cannot pass"),
        "dave": (2, 0, 0, "cannot pass"),
        "Ёлкина, Анна": (4, 0, 0, "passed"),
    }
    assert report.verdicts() == {"passed": ("alice", "Ёлкина, Анна"),
                                 "cannot pass": ("bob", "carol", "dave")}


def test_pass_table_while_homeworks_are_open(course: Course) -> None:
    # 20 November: the 50 % tiers of hw1-hw3 and all of hw4-hw5 are still open
    rows = golden_rows(course)
    table = {s.student: (s.passed, s.pending, s.still_open, s.words)
             for s in build_report(course, rows, dt.datetime(2026, 11, 20, 12, 0,
                                                             tzinfo=course.timezone),
                                   roster=ROSTER).standings}
    assert table["bob"] == (1, 1, 3, "needs 3 more")  # hw2 (0 %), hw4, hw5 open
    assert table["carol"] == (0, 0, 5, "needs 4 more")
    assert table["dave"] == (2, 0, 3, "needs 2 more")


@pytest.mark.parametrize(
    ("local_now", "extension", "verdict"),
    [
        pytest.param("2026-12-08 11:59:59", None, "one short", id="last-minute-of-the-50-tier"),
        pytest.param("2026-12-08 12:00:00", None, "cannot pass", id="the-50-tier-is-over"),
        pytest.param("2026-12-08 12:00:00", Extension(extra=dt.timedelta(hours=48)),
                     "one short", id="an-extension-keeps-it-open"),
        pytest.param("2026-12-10 12:00:00", Extension(extra=dt.timedelta(hours=48)),
                     "cannot pass", id="the-extension-is-over"),
    ],
)
def test_one_short_until_the_last_window_closes(course: Course, local_now: str,
                                                extension: Extension | None,
                                                verdict: str) -> None:
    rows = [make_row("ann", a, raw=90.0, final=90.0) for a in ("hw1", "hw2", "hw3")]
    if extension is not None:
        course = replace(course, extensions={("ann", "hw5"): extension})
    now = dt.datetime.fromisoformat(local_now).replace(tzinfo=course.timezone)
    standing = build_report(course, rows, now).standings[0]
    assert (standing.passed, standing.words) == (3, verdict)


def test_a_capped_pass_needs_a_tier_at_the_pass_mark(course: Course) -> None:
    # With the pass mark at 60 %, the 50 % tier cannot pass anyone: hw5 closes with its 75 %
    # tier (D+2 = 3 December), not on the last lecture day.
    strict = replace(course, pass_rule=replace(course.pass_rule, min_percent=60.0))
    rows = [make_row("ann", a, raw=90.0, final=90.0) for a in ("hw1", "hw2", "hw3")]
    standing = build_report(strict, rows, dt.datetime(2026, 12, 4, tzinfo=course.timezone)
                            ).standings[0]
    assert (standing.still_open, standing.words) == (0, "cannot pass")


def test_the_time_must_be_aware(course: Course) -> None:
    with pytest.raises(ValueError, match="naive"):
        build_report(course, [], dt.datetime(2026, 12, 20))


def test_an_empty_gradebook_is_a_report_of_nothing(course: Course) -> None:
    report = build_report(course, [], AFTER_THE_COURSE)
    assert report.standings == () and report.flagged_pairs == 0
    assert all(h.submitted == 0 and h.timing is None and h.raw_mean is None
               for h in report.homeworks)
