"""Table tests for grader/pipeline/score.py: raw percent from check verdicts, then the late cap."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from grader.course.config import load_course
from grader.course.rules import LatePolicy
from grader.pipeline.checking import CheckResult, Outcome
from grader.pipeline.score import Deadlines, raw_percent, score

MSK = ZoneInfo("Europe/Moscow")
P, F, E = Outcome.PASSED, Outcome.FAILED, Outcome.ERROR
LAST_US = 999_999


def checks(*spec: tuple[float, Outcome]) -> tuple[CheckResult, ...]:
    return tuple(CheckResult(f"test_{i}", points, outcome) for i, (points, outcome)
                 in enumerate(spec))


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        pytest.param(checks((2, P), (3, P)), (5.0, 5.0, 100.0), id="all-pass"),
        pytest.param(checks((2, F), (3, E)), (0.0, 5.0, 0.0), id="none-pass"),
        pytest.param(checks((2, P), (3, F)), (2.0, 5.0, 40.0), id="partial"),
        pytest.param(checks((1, P), (1, F), (1, F)), (1.0, 3.0, 33.33), id="rounded-down"),
        pytest.param(checks((2, P), (1, F)), (2.0, 3.0, 66.67), id="rounded-up"),
        pytest.param(checks((0.5, P), (1.5, E)), (0.5, 2.0, 25.0), id="fractional-points"),
        pytest.param(checks((1, E)), (0.0, 1.0, 0.0), id="grader-error-earns-nothing"),
        pytest.param((), (0.0, 0.0, 0.0), id="no-checks"),
    ],
)
def test_raw_percent(results: tuple[CheckResult, ...],
                     expected: tuple[float, float, float]) -> None:
    assert raw_percent(results) == expected


def test_raw_percent_takes_any_iterable() -> None:
    assert raw_percent(iter(checks((1, P), (3, F)))) == (1.0, 4.0, 25.0)


# hw1 of the repository's course: lecture 2026-11-03, last lecture day 2026-12-08, Moscow, the
# deadline minute 11:59. Raw 80 % (4 of 5 points).
COURSE = load_course(Path(__file__).resolve().parents[1] / "course.toml")
HW1 = Deadlines(COURSE.assignment("hw1").lecture_day, COURSE.last_lecture_day, COURSE.timezone,
                COURSE.deadline_time, COURSE.late_policy)
RAW80 = checks((4, P), (1, F))


def msk(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=MSK)


def test_course_dates_are_the_ones_this_table_assumes() -> None:
    assert (HW1.lecture_day, HW1.last_lecture_day) == (dt.date(2026, 11, 3), dt.date(2026, 12, 8))
    assert (HW1.deadline_time, HW1.timezone.key) == (dt.time(11, 59), "Europe/Moscow")
    assert HW1.policy is LatePolicy.CAP


@pytest.mark.parametrize(
    ("submitted", "cap", "final"),
    [
        pytest.param(msk(2026, 11, 3, 18, 0), 100.0, 80.0, id="lecture-day"),
        pytest.param(msk(2026, 11, 4, 11, 59, 59, LAST_US), 100.0, 80.0, id="D+1-last-instant"),
        pytest.param(msk(2026, 11, 4, 12, 0), 75.0, 75.0, id="D+1-12:00"),
        pytest.param(msk(2026, 11, 5, 11, 59, 59, LAST_US), 75.0, 75.0, id="D+2-last-instant"),
        pytest.param(msk(2026, 11, 5, 12, 0), 50.0, 50.0, id="D+2-12:00"),
        pytest.param(msk(2026, 12, 8, 11, 59, 59, LAST_US), 50.0, 50.0, id="LLD-last-instant"),
        pytest.param(msk(2026, 12, 8, 12, 0), 0.0, 0.0, id="LLD-12:00"),
        pytest.param(dt.datetime(2026, 11, 4, 8, 59, 59, tzinfo=dt.UTC), 100.0, 80.0,
                     id="utc-just-before"),
        pytest.param(dt.datetime(2026, 11, 4, 9, 0, tzinfo=dt.UTC), 75.0, 75.0,
                     id="utc-just-after"),
    ],
)
def test_score_cap_policy(submitted: dt.datetime, cap: float, final: float) -> None:
    s = score(RAW80, submitted, HW1)
    assert (s.earned, s.possible, s.raw) == (4.0, 5.0, 80.0)
    assert (s.cap, s.final) == (cap, final)
    assert s.late_reason


@pytest.mark.parametrize(
    ("submitted", "cap", "final"),
    [
        pytest.param(msk(2026, 11, 4, 11, 59), 100.0, 80.0, id="D+1-11:59"),
        pytest.param(msk(2026, 11, 4, 12, 0), 75.0, 60.0, id="D+1-12:00"),
        pytest.param(msk(2026, 11, 5, 12, 0), 50.0, 40.0, id="D+2-12:00"),
        pytest.param(msk(2026, 12, 8, 12, 0), 0.0, 0.0, id="LLD-12:00"),
    ],
)
def test_score_scale_policy(submitted: dt.datetime, cap: float, final: float) -> None:
    deadlines = Deadlines(HW1.lecture_day, HW1.last_lecture_day, MSK, dt.time(11, 59),
                          LatePolicy.SCALE)
    s = score(RAW80, submitted, deadlines)
    assert (s.raw, s.cap, s.final) == (80.0, cap, final)


def test_final_is_rounded_to_two_decimals() -> None:
    deadlines = Deadlines(HW1.lecture_day, HW1.last_lecture_day, MSK, dt.time(11, 59),
                          LatePolicy.SCALE)
    s = score(checks((1, P), (2, F)), msk(2026, 11, 4, 12, 0), deadlines)  # 33.33 * 0.75
    assert (s.raw, s.cap, s.final) == (33.33, 75.0, 25.0)


def test_unknown_time_has_no_cap_and_no_final() -> None:
    s = score(RAW80, None, HW1)
    assert (s.earned, s.possible, s.raw) == (4.0, 5.0, 80.0)
    assert (s.cap, s.final) == (None, None)
    assert s.late_reason


def test_zero_possible_points_scores_zero() -> None:
    s = score((), msk(2026, 11, 3, 18, 0), HW1)
    assert (s.earned, s.possible, s.raw, s.cap, s.final) == (0.0, 0.0, 0.0, 100.0, 0.0)


def test_naive_submission_time_is_rejected() -> None:
    with pytest.raises(ValueError):
        score(RAW80, dt.datetime(2026, 11, 3, 18, 0), HW1)
