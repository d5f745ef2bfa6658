"""Table tests for grader/course/rules.py: late tiers, late decisions, final scores, the pass
rule."""

from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from grader.course.rules import (
    Extension,
    LatePolicy,
    Tier,
    final_score,
    late_decision,
    late_tiers,
    passes,
)

MSK = ZoneInfo("Europe/Moscow")  # UTC+3 all year
BER = ZoneInfo("Europe/Berlin")  # DST: 2026-03-29 02:00 -> 03:00, 2026-10-25 03:00 -> 02:00
NY = ZoneInfo("America/New_York")
IST = timezone(timedelta(hours=5, minutes=30))

D = date(2026, 2, 10)  # lecture day of the HA
LLD = date(2026, 5, 19)  # last lecture day
BER_LLD = date(2026, 12, 15)
LAST_US = 999999


def msk(*args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=MSK, fold=fold)


def ber(*args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=BER, fold=fold)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


L1, L2, LL = "D+1 11:59", "D+2 11:59", "last lecture day 11:59"


@pytest.mark.parametrize(
    ("submitted", "cap", "tier", "missed"),
    [
        pytest.param(msk(2026, 2, 9, 18, 0), 100.0, L1, None, id="before-lecture"),
        pytest.param(msk(2026, 2, 10, 18, 0), 100.0, L1, None, id="day-D"),
        pytest.param(msk(2026, 2, 11, 11, 59), 100.0, L1, None, id="D+1-11:59:00"),
        pytest.param(msk(2026, 2, 11, 11, 59, 59), 100.0, L1, None, id="D+1-11:59:59"),
        pytest.param(msk(2026, 2, 11, 11, 59, 59, LAST_US), 100.0, L1, None, id="D+1-last-us"),
        pytest.param(msk(2026, 2, 11, 12, 0), 75.0, L2, L1, id="D+1-12:00:00"),
        pytest.param(msk(2026, 2, 12, 11, 59, 59), 75.0, L2, L1, id="D+2-11:59:59"),
        pytest.param(msk(2026, 2, 12, 11, 59, 59, LAST_US), 75.0, L2, L1, id="D+2-last-us"),
        pytest.param(msk(2026, 2, 12, 12, 0), 50.0, LL, L2, id="D+2-12:00:00"),
        pytest.param(msk(2026, 5, 19, 11, 59, 59), 50.0, LL, L2, id="LLD-11:59:59"),
        pytest.param(msk(2026, 5, 19, 11, 59, 59, LAST_US), 50.0, LL, L2, id="LLD-last-us"),
        pytest.param(msk(2026, 5, 19, 12, 0), 0.0, None, LL, id="LLD-12:00:00"),
        pytest.param(msk(2026, 6, 30, 9, 0), 0.0, None, LL, id="past-everything"),
    ],
)
def test_tier_boundaries(submitted, cap, tier, missed):
    decision = late_decision(submitted, late_tiers(D, LLD, MSK))
    assert decision.cap == cap
    assert (decision.tier and decision.tier.label) == tier
    assert (decision.missed and decision.missed.label) == missed


@pytest.mark.parametrize(
    ("lecture_day", "deadline_time", "extension", "submitted", "cap"),
    [
        # D+1 on the spring change: 12:00 CEST = 10:00 UTC (not 11:00, D's CET offset).
        pytest.param(date(2026, 3, 28), time(11, 59), None, utc(2026, 3, 29, 9, 59, 59, LAST_US),
                     100.0, id="spring-D+1-last-us"),
        pytest.param(date(2026, 3, 28), time(11, 59), None, utc(2026, 3, 29, 10, 0),
                     75.0, id="spring-D+1-12:00"),
        pytest.param(date(2026, 3, 28), time(11, 59), None, ber(2026, 3, 29, 11, 59, 59, LAST_US),
                     100.0, id="spring-D+1-local-last-us"),
        pytest.param(date(2026, 3, 27), time(11, 59), None, utc(2026, 3, 29, 10, 0),
                     50.0, id="spring-D+2-12:00"),
        # D+1 on the autumn change: 12:00 CET = 11:00 UTC (not 10:00, D's CEST offset).
        pytest.param(date(2026, 10, 24), time(11, 59), None, utc(2026, 10, 25, 10, 30),
                     100.0, id="autumn-D+1-10:30Z"),
        pytest.param(date(2026, 10, 24), time(11, 59), None, utc(2026, 10, 25, 10, 59, 59, LAST_US),
                     100.0, id="autumn-D+1-last-us"),
        pytest.param(date(2026, 10, 24), time(11, 59), None, utc(2026, 10, 25, 11, 0),
                     75.0, id="autumn-D+1-12:00"),
        # Extra time is elapsed: D+1 12:00 CET (11:00Z) + 24 h = 11:00Z = 13:00 CEST next day.
        pytest.param(date(2026, 3, 27), time(11, 59), Extension(extra=timedelta(hours=24)),
                     utc(2026, 3, 29, 10, 30), 100.0, id="spring-extra-24h-elapsed"),
        pytest.param(date(2026, 3, 27), time(11, 59), Extension(extra=timedelta(hours=24)),
                     utc(2026, 3, 29, 11, 0), 75.0, id="spring-extra-24h-end"),
        # Deadline minute 02:29 in the repeated hour: first occurrence (CEST), ends 00:30Z.
        pytest.param(date(2026, 10, 24), time(2, 29), None, ber(2026, 10, 25, 2, 15, fold=0),
                     100.0, id="ambiguous-first-pass"),
        pytest.param(date(2026, 10, 24), time(2, 29), None, ber(2026, 10, 25, 2, 15, fold=1),
                     75.0, id="ambiguous-second-pass-late"),
    ],
)
def test_dst(lecture_day, deadline_time, extension, submitted, cap):
    tiers = late_tiers(lecture_day, BER_LLD, BER, deadline_time, extension)
    assert late_decision(submitted, tiers).cap == cap


@pytest.mark.parametrize(
    ("submitted", "cap"),
    [
        pytest.param(msk(2026, 2, 11, 11, 59, 59, LAST_US), 100.0, id="moscow-in"),
        pytest.param(utc(2026, 2, 11, 8, 59, 59, LAST_US), 100.0, id="utc-in"),
        pytest.param(datetime(2026, 2, 11, 3, 59, 59, LAST_US, tzinfo=NY), 100.0, id="ny-in"),
        pytest.param(datetime(2026, 2, 11, 14, 29, 59, LAST_US, tzinfo=IST), 100.0, id="+0530-in"),
        pytest.param(msk(2026, 2, 11, 12, 0), 75.0, id="moscow-out"),
        pytest.param(utc(2026, 2, 11, 9, 0), 75.0, id="utc-out"),
        pytest.param(datetime(2026, 2, 11, 4, 0, tzinfo=NY), 75.0, id="ny-out"),
        pytest.param(datetime(2026, 2, 11, 14, 30, tzinfo=IST), 75.0, id="+0530-out"),
    ],
)
def test_same_instant_any_offset(submitted, cap):
    assert late_decision(submitted, late_tiers(D, LLD, MSK)).cap == cap


@pytest.mark.parametrize(
    ("extension", "submitted", "cap"),
    [
        pytest.param(Extension(extra=timedelta(hours=2)), msk(2026, 2, 11, 13, 59, 59, LAST_US),
                     100.0, id="extra-2h-D+1-in"),
        pytest.param(Extension(extra=timedelta(hours=2)), msk(2026, 2, 11, 14, 0),
                     75.0, id="extra-2h-D+1-out"),
        pytest.param(Extension(extra=timedelta(hours=2)), msk(2026, 2, 12, 14, 0),
                     50.0, id="extra-2h-D+2-out"),
        pytest.param(Extension(extra=timedelta(hours=2)), msk(2026, 5, 19, 13, 59, 59, LAST_US),
                     50.0, id="extra-2h-LLD-in"),
        pytest.param(Extension(extra=timedelta(hours=2)), msk(2026, 5, 19, 14, 0),
                     0.0, id="extra-2h-LLD-out"),
        pytest.param(Extension(extra=timedelta(seconds=30)), msk(2026, 2, 11, 12, 0, 29, LAST_US),
                     100.0, id="extra-30s-in"),
        pytest.param(Extension(extra=timedelta(seconds=30)), msk(2026, 2, 11, 12, 0, 30),
                     75.0, id="extra-30s-out"),
        pytest.param(Extension(new_base_date=date(2026, 2, 15)),
                     msk(2026, 2, 16, 11, 59, 59, LAST_US), 100.0, id="base-D'+1-in"),
        pytest.param(Extension(new_base_date=date(2026, 2, 15)), msk(2026, 2, 16, 12, 0),
                     75.0, id="base-D'+1-out"),
        pytest.param(Extension(new_base_date=date(2026, 2, 15)), msk(2026, 2, 17, 12, 0),
                     50.0, id="base-D'+2-out"),
        pytest.param(Extension(new_base_date=date(2026, 2, 15)), msk(2026, 5, 19, 12, 0),
                     0.0, id="base-LLD-out"),
        pytest.param(Extension(new_base_date=date(2026, 5, 18)), msk(2026, 5, 19, 12, 0),
                     75.0, id="base-near-end-D'+1-out"),
        pytest.param(Extension(new_base_date=date(2026, 5, 18)),
                     msk(2026, 5, 20, 11, 59, 59, LAST_US), 75.0, id="base-near-end-D'+2-in"),
        pytest.param(Extension(new_base_date=date(2026, 5, 18)), msk(2026, 5, 20, 12, 0),
                     0.0, id="base-near-end-no-50-tier"),
    ],
)
def test_extension_decisions(extension, submitted, cap):
    assert late_decision(submitted, late_tiers(D, LLD, MSK, extension=extension)).cap == cap


def _noon(month: int, day: int, hour: int = 12) -> datetime:
    return msk(2026, month, day, hour, 0)


X = " (extended)"


@pytest.mark.parametrize(
    ("lecture_day", "deadline_time", "extension", "expected"),
    [
        pytest.param(D, time(11, 59), None,
                     [(_noon(2, 11), 100.0, L1), (_noon(2, 12), 75.0, L2),
                      (_noon(5, 19), 50.0, LL)], id="normal"),
        pytest.param(date(2026, 5, 16), time(11, 59), None,
                     [(_noon(5, 17), 100.0, L1), (_noon(5, 18), 75.0, L2),
                      (_noon(5, 19), 50.0, LL)], id="D=LLD-3-all-tiers"),
        pytest.param(date(2026, 5, 17), time(11, 59), None,
                     [(_noon(5, 18), 100.0, L1), (_noon(5, 19), 75.0, L2)], id="D+2=LLD"),
        pytest.param(date(2026, 5, 18), time(11, 59), None,
                     [(_noon(5, 19), 100.0, L1), (_noon(5, 20), 75.0, L2)], id="D+1=LLD"),
        pytest.param(LLD, time(11, 59), None,
                     [(_noon(5, 20), 100.0, L1), (_noon(5, 21), 75.0, L2)], id="optional-D=LLD"),
        pytest.param(D, time(23, 59), None,
                     [(msk(2026, 2, 12, 0, 0), 100.0, "D+1 23:59"),
                      (msk(2026, 2, 13, 0, 0), 75.0, "D+2 23:59"),
                      (msk(2026, 5, 20, 0, 0), 50.0, "last lecture day 23:59")],
                     id="deadline-23:59"),
        pytest.param(D, time(11, 59), Extension(extra=timedelta(hours=2)),
                     [(_noon(2, 11, 14), 100.0, L1 + X), (_noon(2, 12, 14), 75.0, L2 + X),
                      (_noon(5, 19, 14), 50.0, LL + X)], id="extra-2h"),
        pytest.param(D, time(11, 59), Extension(extra=timedelta(days=100)),
                     [(_noon(5, 22), 100.0, L1 + X), (_noon(5, 23), 75.0, L2 + X),
                      (_noon(8, 27), 50.0, LL + X)], id="extra-past-LLD-moves-all"),
        pytest.param(D, time(11, 59), Extension(new_base_date=date(2026, 2, 15)),
                     [(_noon(2, 16), 100.0, L1 + X), (_noon(2, 17), 75.0, L2 + X),
                      (_noon(5, 19), 50.0, LL + X)], id="new-base"),
        pytest.param(D, time(11, 59), Extension(new_base_date=date(2026, 5, 18)),
                     [(_noon(5, 19), 100.0, L1 + X), (_noon(5, 20), 75.0, L2 + X)],
                     id="new-base-near-end"),
        pytest.param(D, time(11, 59), Extension(new_base_date=date(2026, 5, 22)),
                     [(_noon(5, 23), 100.0, L1 + X), (_noon(5, 24), 75.0, L2 + X)],
                     id="new-base-after-LLD"),
    ],
)
def test_late_tiers(lecture_day, deadline_time, extension, expected):
    tiers = late_tiers(lecture_day, LLD, MSK, deadline_time, extension)
    assert [(t.deadline, t.cap, t.label) for t in tiers] == expected
    assert all(t.deadline.tzinfo is MSK for t in tiers)
    # Caps never rise with lateness, and no tier is empty.
    pairs = zip(tiers, tiers[1:], strict=False)
    assert all(a.cap > b.cap and a.deadline < b.deadline for a, b in pairs)


@pytest.mark.parametrize(
    ("lecture_day", "submitted", "cap", "missed"),
    [
        pytest.param(LLD, msk(2026, 5, 21, 11, 59, 59, LAST_US), 75.0, L1, id="optional-D+2-in"),
        pytest.param(LLD, msk(2026, 5, 21, 12, 0), 0.0, L2, id="optional-D+2-out-no-50"),
        pytest.param(date(2026, 5, 17), msk(2026, 5, 19, 12, 0), 0.0, L2, id="D+2=LLD-out"),
        pytest.param(date(2026, 5, 18), msk(2026, 5, 20, 11, 0), 75.0, L1, id="D+1=LLD-D+2-in"),
    ],
)
def test_overlapping_tiers_decide(lecture_day, submitted, cap, missed):
    decision = late_decision(submitted, late_tiers(lecture_day, LLD, MSK))
    assert (decision.cap, decision.missed.label) == (cap, missed)


@pytest.mark.parametrize(
    ("submitted", "expected"),
    [
        pytest.param(utc(2026, 2, 11, 8, 0),
                     ["2026-02-11 11:00:00+03:00", "Europe/Moscow", "before the D+1 11:59",
                      "2026-02-11 12:00:00+03:00", "100 %"], id="on-time-given-in-utc"),
        pytest.param(datetime(2026, 2, 11, 4, 0, tzinfo=NY),
                     ["2026-02-11 12:00:00+03:00", "after the D+1 11:59", "75 %"], id="late"),
        pytest.param(msk(2026, 5, 19, 12, 0),
                     ["2026-05-19 12:00:00+03:00", "after the last lecture day 11:59", "0 %"],
                     id="past-all"),
        pytest.param(None, ["no usable time stamp", "not counted as on time"], id="missing"),
    ],
)
def test_reason(submitted, expected):
    reason = late_decision(submitted, late_tiers(D, LLD, MSK)).reason
    for part in expected:
        assert part in reason


def test_missing_time_has_no_cap():
    decision = late_decision(None, late_tiers(D, LLD, MSK))
    assert (decision.cap, decision.tier, decision.missed) == (None, None, None)


NAIVE = datetime(2026, 2, 11, 11, 0)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        pytest.param(lambda: late_decision(NAIVE, late_tiers(D, LLD, MSK)), "naive",
                     id="naive-submitted_at"),
        pytest.param(lambda: Tier(deadline=NAIVE, cap=100.0, label="x"), "naive",
                     id="naive-tier-deadline"),
        pytest.param(lambda: late_decision(_noon(2, 11), ()), "empty", id="no-tiers"),
        pytest.param(lambda: late_decision(_noon(2, 11), tuple(reversed(late_tiers(D, LLD, MSK)))),
                     "rising", id="tiers-out-of-order"),
        pytest.param(lambda: Tier(deadline=_noon(2, 11), cap=101.0, label="x"), "percent",
                     id="tier-cap-over-100"),
        pytest.param(lambda: Extension(), "exactly one", id="extension-empty"),
        pytest.param(lambda: Extension(extra=timedelta(hours=1), new_base_date=D), "exactly one",
                     id="extension-both"),
        pytest.param(lambda: Extension(extra=timedelta(hours=-1)), "positive",
                     id="extension-negative"),
        pytest.param(lambda: Extension(new_base_date=_noon(2, 15)), "not a datetime",
                     id="extension-base-datetime"),
        pytest.param(lambda: late_tiers(D, LLD, MSK, extension=Extension(new_base_date=date(
            2026, 2, 9))), "not an extension", id="new-base-before-D"),
        pytest.param(lambda: late_tiers(date(2026, 5, 20), LLD, MSK), "after", id="D-after-LLD"),
        pytest.param(lambda: late_tiers(D, LLD, MSK, time(11, 59, 30)), "whole minute",
                     id="deadline-time-seconds"),
        pytest.param(lambda: late_tiers(D, LLD, MSK, time(11, 59, tzinfo=UTC)), "tzinfo",
                     id="deadline-time-aware"),
        pytest.param(lambda: late_tiers(_noon(2, 10), LLD, MSK), "not a datetime",
                     id="lecture-day-datetime"),
    ],
)
def test_rejected(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    ("raw", "cap", "policy", "expected"),
    [
        pytest.param(80.0, 100.0, LatePolicy.CAP, 80.0, id="cap-100"),
        pytest.param(80.0, 75.0, LatePolicy.CAP, 75.0, id="cap-bites"),
        pytest.param(60.0, 75.0, LatePolicy.CAP, 60.0, id="cap-above-raw"),
        pytest.param(80.0, 0.0, LatePolicy.CAP, 0.0, id="cap-0"),
        pytest.param(80.0, 75.0, LatePolicy.SCALE, 60.0, id="scale-75"),
        pytest.param(60.0, 50.0, LatePolicy.SCALE, 30.0, id="scale-50"),
        pytest.param(90.0, 100.0, LatePolicy.SCALE, 90.0, id="scale-100"),
        pytest.param(80.0, 0.0, LatePolicy.SCALE, 0.0, id="scale-0"),
        pytest.param(80.0, None, LatePolicy.CAP, None, id="cap-unknown-time"),
        pytest.param(80.0, None, LatePolicy.SCALE, None, id="scale-unknown-time"),
    ],
)
def test_final_score(raw, cap, policy, expected):
    assert final_score(raw, cap, policy) == pytest.approx(expected)


def test_final_score_default_is_cap():
    assert final_score(80.0, 75.0) == 75.0


@pytest.mark.parametrize(
    ("raw", "cap"),
    [
        pytest.param(-1.0, 100.0, id="raw-negative"),
        pytest.param(100.5, 100.0, id="raw-over-100"),
        pytest.param(float("nan"), 100.0, id="raw-nan"),
        pytest.param(50.0, 150.0, id="cap-over-100"),
    ],
)
def test_final_score_rejects(raw, cap):
    with pytest.raises(ValueError, match="percent"):
        final_score(raw, cap)


@pytest.mark.parametrize(
    ("finals", "kwargs", "expected"),
    [
        pytest.param([100, 100, 100, 100, 0], {}, (4, True), id="4-of-5"),
        pytest.param([100, 100, 100, 0, 0], {}, (3, False), id="3-of-5"),
        pytest.param([100.0] * 5, {}, (5, True), id="5-of-5"),
        pytest.param([100, 100, 100, 100, None], {}, (4, True), id="4-and-None"),
        pytest.param([100, None, 100, None, 100], {}, (3, False), id="None-not-passed"),
        pytest.param([None] * 5, {}, (0, False), id="all-None"),
        pytest.param([50.0, 50.0, 50.0, 50.0, 0.0], {}, (4, True), id="exactly-50"),
        pytest.param([49.999, 50.0, 50.0, 50.0, 100.0], {}, (4, True), id="one-49.999"),
        pytest.param([49.999, 49.999, 50.0, 50.0, 50.0], {}, (3, False), id="two-49.999"),
        pytest.param(iter([60, 60, 60, 0, 0]), {"min_percent": 60.0, "min_count": 3}, (3, True),
                     id="params-iterator"),
        pytest.param([59.9, 60, 60, 0, 0], {"min_percent": 60.0, "min_count": 3}, (2, False),
                     id="params-below"),
        pytest.param([], {}, (0, False), id="empty"),
    ],
)
def test_passes(finals, kwargs, expected):
    assert passes(finals, **kwargs) == expected
