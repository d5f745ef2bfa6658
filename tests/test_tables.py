"""Tests for grader/output/tables.py: the wide and long gradebook tables and the CSV writer.

Golden files: ``tests/golden/gradebook_wide.csv`` and ``tests/golden/gradebook_long.csv`` are
the byte-for-byte expected CSVs for the fixed rows in ``golden_rows()``. After an intended
change of the export format, regenerate them with

    UPDATE_GOLDENS=1 .venv/bin/python -m pytest tests/test_tables.py -k golden -p no:cacheprovider

and review the diff (``git diff tests/golden``) before committing it. Without the variable the
test only compares and never writes into the source tree.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import stat
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from rows import MSK_OFFSET, REPO_COURSE, golden_rows, make_row, row_with_final

from grader.course.config import Course, RosterEntry, load_course
from grader.output.tables import long_table, wide_table, write_csv
from grader.output.view import counted_rows, display_status
from grader.records import Status

GOLDEN = Path(__file__).resolve().parent / "golden"
AFTER = dt.datetime(2026, 12, 20, 12, 0, tzinfo=dt.UTC)  # every window of the course closed


@pytest.fixture(scope="module")
def course() -> Course:
    return load_course(REPO_COURSE)


# -- wide table --------------------------------------------------------------------------------


def test_wide_columns_in_documented_order(course: Course) -> None:
    frame = wide_table(course, [make_row()], AFTER)
    expected = ["student", "name", "email"]
    for a in ("hw1", "hw2", "hw3", "hw4", "hw5", "hw6"):
        expected += [f"{a}_raw", f"{a}_cap", f"{a}_final", f"{a}_status", f"{a}_submitted_at"]
    expected += ["required_passed", "verdict"]
    assert list(frame.columns) == expected
    # Same columns with no rows at all.
    assert list(wide_table(course, [], AFTER).columns) == expected


def test_wide_rows_sorted_by_student_roster_included(course: Course) -> None:
    rows = [make_row("mike"), make_row("Bob"), make_row("alice", "hw2"), make_row("zed", "hw6")]
    frame = wide_table(course, rows, AFTER, roster=["carol", "alice", "nina"])
    assert list(frame["student"]) == ["Bob", "alice", "carol", "mike", "nina", "zed"]


def test_missing_ha_and_roster_only_student(course: Course) -> None:
    frame = wide_table(course, [make_row("alice", "hw1", raw=80.0, final=80.0)], AFTER,
                       roster=["carol"]).set_index("student")
    alice, carol = frame.loc["alice"], frame.loc["carol"]
    assert (alice["hw1_status"], alice["hw1_final"], alice["hw1_raw"]) == ("ok", 80.0, 80.0)
    for a in ("hw2", "hw3", "hw4", "hw5", "hw6"):
        assert alice[f"{a}_status"] == "missing"
        assert alice[f"{a}_final"] == 0.0
        assert alice[f"{a}_raw"] == 0.0
        assert pd.isna(alice[f"{a}_cap"])
        assert pd.isna(alice[f"{a}_submitted_at"])
    for a in ("hw1", "hw2", "hw3", "hw4", "hw5", "hw6"):
        assert (carol[f"{a}_status"], carol[f"{a}_final"]) == ("missing", 0.0)
    assert (carol["required_passed"], carol["verdict"]) == (0, "failed")


def test_counted_row_is_the_latest_submission(course: Course) -> None:
    rows = [
        make_row(sha256="late", submitted_at="2026-11-04T11:00:00+03:00", raw=90.0, final=90.0),
        make_row(sha256="early", submitted_at="2026-11-04T09:00:00+03:00", raw=10.0, final=10.0,
                 graded_at="2026-12-31T00:00:00+00:00"),
        make_row(sha256="unknown", submitted_at=None, raw=50.0, cap=None, final=None,
                 graded_at="2027-01-01T00:00:00+00:00"),
    ]
    frame = wide_table(course, rows, AFTER)
    assert frame.loc[0, "hw1_final"] == 90.0
    assert frame.loc[0, "hw1_submitted_at"] == "2026-11-04T11:00:00+03:00"
    assert list(long_table(course, rows)["sha256"]) == ["late"]


def test_same_time_regraded_row_counts(course: Course) -> None:
    rows = [make_row(sha256="b", raw=20.0, final=20.0, graded_at="2026-12-10T00:00:00+00:00"),
            make_row(sha256="a", raw=70.0, final=70.0, graded_at="2026-12-09T00:00:00+00:00")]
    assert wide_table(course, rows, AFTER).loc[0, "hw1_final"] == 20.0


def test_counted_row_compares_instants_not_offsets(course: Course) -> None:
    # discover() keeps the offset the timestamp was written with: "...Z" or "UTC" become
    # +00:00, a zone name or a naive time become +03:00. 09:00Z is 12:00 in Moscow, so the
    # UTC-stamped resubmission is the later one, though its text sorts first.
    rows = [make_row(sha256="first", submitted_at="2026-11-04T11:00:00+03:00", raw=30.0,
                     final=30.0),
            make_row(sha256="second", submitted_at="2026-11-04T09:00:00+00:00", raw=95.0,
                     final=95.0)]
    assert list(long_table(course, rows)["sha256"]) == ["second"]
    assert wide_table(course, rows, AFTER).loc[0, "hw1_final"] == 95.0


@pytest.mark.parametrize(
    ("status", "submitted_at", "shown"),
    [
        pytest.param("ok", "2026-11-04T10:00:00+03:00", "ok", id="ok-known-time"),
        pytest.param("ok", None, "time_unknown", id="ok-unknown-time"),
        pytest.param("cell_error", None, "cell_error", id="cell-error-unknown-time"),
        pytest.param("cell_timeout", None, "cell_timeout", id="cell-timeout-unknown-time"),
        pytest.param("cell_error", "2026-11-04T10:00:00+03:00", "cell_error",
                     id="cell-error-known-time"),
        pytest.param("kernel_died", None, "kernel_died", id="kernel-died-unknown-time"),
        pytest.param("notebook_timeout", None, "notebook_timeout", id="nb-timeout-unknown-time"),
        pytest.param("malformed", None, "malformed", id="malformed-unknown-time"),
    ],
)
def test_display_status(status: str, submitted_at: str | None, shown: str,
                        course: Course) -> None:
    row = make_row(status=Status(status), submitted_at=submitted_at)
    assert display_status(row) is Status(shown)
    assert wide_table(course, [row], AFTER).loc[0, "hw1_status"] == shown
    assert long_table(course, [row]).loc[0, "status"] == shown


# finals of hw1..hw6 (course rule: final >= 50 on at least 4 of the 5 required HAs; hw6 is
# optional). "-" means no submission; None means a final that waits (an unknown time).
PASS_CASES = [
    pytest.param([50, 50, 50, 50, "-", "-"], 4, "passed", id="exactly-four-at-50"),
    pytest.param([100, 100, 100, 100, 100, 100], 5, "passed", id="all"),
    pytest.param([100, 100, 100, 49.99, 100, "-"], 4, "passed", id="one-just-below"),
    pytest.param([100, 100, 100, 49.99, 0, "-"], 3, "failed", id="three"),
    pytest.param([100, 100, 100, "-", "-", 100], 3, "failed", id="optional-does-not-count"),
    pytest.param([100, 100, 100, None, "-", "-"], 3, "open", id="three-and-one-unknown"),
    pytest.param([100, 100, None, None, 0, "-"], 2, "open", id="two-and-two-unknown"),
    pytest.param([100, 100, None, "-", "-", "-"], 2, "failed", id="two-and-one-unknown"),
    pytest.param([100, 100, 100, 100, None, "-"], 4, "passed", id="passed-despite-unknown"),
    pytest.param([100, 100, 100, "-", "-", None], 3, "failed", id="unknown-optional-no-help"),
    pytest.param(["-"] * 6, 0, "failed", id="nothing"),
]


@pytest.mark.parametrize(("finals", "count", "verdict"), PASS_CASES)
def test_verdict_after_the_course(course: Course, finals: list[object], count: int,
                                  verdict: str) -> None:
    rows = [row_with_final("alice", f"hw{i}", final)  # type: ignore[arg-type]
            for i, final in enumerate(finals, start=1) if final != "-"]
    frame = wide_table(course, rows, AFTER, roster=["alice"])
    assert (frame.loc[0, "required_passed"], frame.loc[0, "verdict"]) == (count, verdict)


@pytest.mark.parametrize(("now", "verdict"), [
    pytest.param("2026-11-26T12:00:00+03:00", "open", id="hw4-and-hw5-windows-open"),
    pytest.param("2026-12-20T12:00:00+03:00", "failed", id="every-window-closed"),
])
def test_a_student_who_can_still_pass_is_open_not_failed(course: Course, now: str,
                                                           verdict: str) -> None:
    rows = [row_with_final("alice", f"hw{i}", 100.0) for i in (1, 2, 3)]
    frame = wide_table(course, rows, dt.datetime.fromisoformat(now), roster=["alice"])
    assert (frame.loc[0, "required_passed"], frame.loc[0, "verdict"]) == (3, verdict)


def test_long_table(course: Course) -> None:
    rows = [make_row("bob", "hw6", seed=7), make_row("alice", "hw2"), make_row("alice", "hw1"),
            make_row("alice", "hw1", sha256="old", submitted_at="2026-11-03T10:00:00+03:00")]
    frame = long_table(course, rows)
    assert list(frame.columns) == ["student", "assignment", "required", "raw", "cap", "final",
                                   "status", "submitted_at", "detail", "sha256", "seed",
                                   "graded_at"]
    assert list(zip(frame["student"], frame["assignment"], frame["required"], strict=True)) == [
        ("alice", "hw1", "yes"), ("alice", "hw2", "yes"), ("bob", "hw6", "no")]
    assert frame.loc[0, "sha256"] == make_row("alice", "hw1").sha256
    assert frame.loc[2, "seed"] == 7


# -- write_csv ---------------------------------------------------------------------------------

TRICKY = ["Ivanov, Ivan", 'Dwayne "The Rock"', "two\nlines", "Ёжиков Пётр", "李雷",
          "tab\tinside", "plain", "trailing space ", "cr\r\nlf"]


def test_write_csv_quoting_roundtrips(tmp_path: Path) -> None:
    frame = pd.DataFrame({"student": TRICKY, "score": [float(i) for i in range(len(TRICKY))]})
    path = tmp_path / "out" / "grades.csv"
    write_csv(frame, path)

    # every cell on one line: a line break is shown, a tab is a space; quoting keeps the rest
    shown = [name.replace("\r\n", " ⏎ ").replace("\n", " ⏎ ").replace("\t", " ")
             for name in TRICKY]
    assert path.read_text(encoding="utf-8").count("\n") == len(TRICKY) + 1
    with path.open(encoding="utf-8", newline="") as f:
        records = list(csv.reader(f))
    assert records[0] == ["student", "score"]
    assert records[1:] == [[name, f"{i:.2f}"] for i, name in enumerate(shown)]

    back = pd.read_csv(path, encoding="utf-8", keep_default_na=False)
    assert list(back["student"]) == shown
    assert list(back["score"]) == [float(i) for i in range(len(TRICKY))]


def test_write_csv_is_utf8_without_bom(tmp_path: Path) -> None:
    path = tmp_path / "grades.csv"
    write_csv(pd.DataFrame({"student": ["Ёжиков"]}), path)
    assert path.read_bytes() == "student\nЁжиков\n".encode()


@pytest.mark.parametrize(
    ("value", "written"),
    [
        pytest.param("=1+1", "'=1+1", id="equals"),
        pytest.param("+7 999", "'+7 999", id="plus"),
        pytest.param("-2+3", "'-2+3", id="minus"),
        pytest.param("@SUM(A1:A9)", "'@SUM(A1:A9)", id="at"),
        pytest.param('=HYPERLINK("http://x","y")', '\'=HYPERLINK("http://x","y")',
                     id="hyperlink"),
        pytest.param("\t=1", "' =1", id="tab"),
        pytest.param(" =1+1", "' =1+1", id="space-before-equals"),
        pytest.param("\r=1+1", " ⏎ =1+1", id="carriage-return: no row of its own"),
        pytest.param("a=b", "a=b", id="equals-inside"),
        pytest.param("alice", "alice", id="plain"),
        pytest.param("", "", id="empty"),
    ],
)
def test_write_csv_neutralises_formulas(tmp_path: Path, value: str, written: str) -> None:
    path = tmp_path / "grades.csv"
    write_csv(pd.DataFrame({"student": [value], "detail": [value]}), path)
    with path.open(encoding="utf-8", newline="") as f:
        records = list(csv.reader(f))
    assert records == [["student", "detail"], [written, written]]


def test_write_csv_leaves_numbers_alone(tmp_path: Path) -> None:
    path = tmp_path / "grades.csv"
    write_csv(pd.DataFrame({"delta": [-1.5, 0.0], "n": [-3, 4]}), path)
    assert path.read_text(encoding="utf-8") == "delta,n\n-1.50,-3\n0.00,4\n"


def test_write_csv_does_not_modify_the_frame(tmp_path: Path) -> None:
    frame = pd.DataFrame({"student": ["=evil", "ok"]})
    write_csv(frame, tmp_path / "grades.csv")
    assert list(frame["student"]) == ["=evil", "ok"]


def test_write_csv_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "grades.csv"
    path.write_text("previous,content\n1,2\n", encoding="utf-8")

    def fail(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_csv(pd.DataFrame({"student": ["alice"]}), path)
    assert path.read_text(encoding="utf-8") == "previous,content\n1,2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grades.csv"]


def test_write_csv_failing_mid_write_leaves_old_file(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "grades.csv"
    path.write_text("old\n", encoding="utf-8")

    def fail(self: pd.DataFrame, *args: object, **kwargs: object) -> None:
        raise RuntimeError("crash while writing")

    monkeypatch.setattr(pd.DataFrame, "to_csv", fail)
    with pytest.raises(RuntimeError):
        write_csv(pd.DataFrame({"student": ["alice"]}), path)
    assert path.read_text(encoding="utf-8") == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grades.csv"]


def test_write_csv_success_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "grades.csv"
    path.write_text("old\n", encoding="utf-8")
    write_csv(pd.DataFrame({"student": ["alice"]}), path)
    assert path.read_text(encoding="utf-8") == "student\nalice\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grades.csv"]


def test_write_csv_file_mode_follows_umask(tmp_path: Path) -> None:
    # A CSV written for TAs must be as readable as any file the instructor writes: the
    # temporary file's private 0600 mode must not survive the rename.
    old_umask = os.umask(0o022)
    try:
        path = tmp_path / "grades.csv"
        write_csv(pd.DataFrame({"student": ["alice"]}), path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


# -- golden files ------------------------------------------------------------------------------

def test_golden_rows_cover_every_tier(course: Course) -> None:
    # Guard for the golden data itself: each late tier and the unknown time occur.
    rows = golden_rows(course)
    assert {r.cap for r in rows} == {100.0, 75.0, 50.0, 0.0, None}
    extended = next(r for r in rows if "extension" in r.detail)
    assert extended.cap == 100.0 and "extended" in extended.late_reason
    assert all(r.submitted_at is None or r.submitted_at.endswith(MSK_OFFSET) for r in rows)


@pytest.mark.parametrize("kind", ["wide", "long"])
def test_golden_csv(course: Course, tmp_path: Path, kind: str) -> None:
    rows = golden_rows(course)
    frame = (wide_table(course, rows, AFTER, roster=["carol", "alice"]) if kind == "wide"
             else long_table(course, rows))
    written = tmp_path / f"gradebook_{kind}.csv"
    write_csv(frame, written)
    golden = GOLDEN / f"gradebook_{kind}.csv"
    if os.environ.get("UPDATE_GOLDENS") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_bytes(written.read_bytes())
    assert golden.is_file(), f"{golden} is missing; create it with UPDATE_GOLDENS=1"
    assert written.read_bytes() == golden.read_bytes()


def test_golden_wide_values(course: Course) -> None:
    # The golden file was checked by eye; these are the facts that check relied on.
    frame = wide_table(course, golden_rows(course), AFTER, roster=["carol"]).set_index("student")
    alice = frame.loc["alice"]
    assert [alice[f"hw{i}_cap"] for i in range(1, 7)] == [100.0, 75.0, 50.0, 0.0, 100.0, 100.0]
    assert [alice[f"hw{i}_final"] for i in range(1, 7)] == [80.0, 75.0, 50.0, 0.0, 50.0, 100.0]
    # hw1 80, hw2 75, hw3 50 and hw5 50 reach 50 %; hw4 (0) fails; hw6 is optional.
    assert (alice["required_passed"], alice["verdict"]) == (4, "passed")
    bob = frame.loc["bob"]
    assert (bob["hw1_status"], bob["hw1_raw"]) == ("time_unknown", 100.0)
    assert pd.isna(bob["hw1_final"]) and pd.isna(bob["hw1_cap"])
    assert (bob["hw4_status"], bob["hw4_final"]) == ("missing", 0.0)
    assert (bob["required_passed"], bob["verdict"]) == (1, "failed")
    assert (frame.loc["Ёлкина, Анна", "required_passed"], frame.loc["Ёлкина, Анна", "verdict"]) \
        == (4, "passed")
    assert (frame.loc["dave", "hw1_final"], frame.loc["dave", "hw1_status"]) == (100.0, "ok")
    assert (frame.loc["carol", "required_passed"], frame.loc["carol", "verdict"]) == (0, "failed")


def test_best_policy_counts_the_highest_final(course: Course) -> None:
    early = make_row("alice", final=90.0, submitted_at="2026-11-04T10:00:00+03:00")
    late = make_row("alice", final=60.0, submitted_at="2026-11-05T10:00:00+03:00",
                    sha256="b" * 64)
    unknown = make_row("alice", final=None, submitted_at=None, sha256="c" * 64)
    rows = [early, late, unknown]
    assert counted_rows(rows)[("alice", "hw1")] is late
    assert counted_rows(rows, "best")[("alice", "hw1")] is early
    best = replace(course, counted="best")
    assert wide_table(best, rows, AFTER).set_index("student").loc["alice", "hw1_final"] == 90.0


def test_roster_from_the_course_gives_names_emails_and_missing_students(course: Course) -> None:

    with_roster = replace(course, roster=(RosterEntry("alice", "Alice A.", "a@uni.example"),
                                          RosterEntry("nina", "Nina N.", "=HYPERLINK(1)")))
    frame = wide_table(with_roster, [make_row("alice")], AFTER).set_index("student")
    assert frame.loc["alice", "name"] == "Alice A." and frame.loc["nina", "hw1_status"] == "missing"
    assert frame.loc["nina", "hw1_final"] == 0.0
