"""Stage 4, score: check verdicts -> raw percent -> late cap -> final percent.

Pure functions: the submission time and the course's dates come in as arguments, nothing here
reads the clock, a file or the gradebook. The rules themselves live in ``grader.course.rules``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from grader.course.rules import (
    Extension,
    LateDecision,
    LatePolicy,
    final_score,
    late_decision,
    late_tiers,
)
from grader.records import CheckResult


@dataclass(frozen=True)
class Score:
    """Points and percents for one graded submission; ``cap``/``final`` are None while the
    submission time is unknown (the instructor must supply one)."""

    earned: float
    possible: float
    raw: float  # percent of possible points
    cap: float | None  # percent
    final: float | None  # percent
    late_reason: str


def raw_percent(results: Iterable[CheckResult]) -> tuple[float, float, float]:
    """(points earned, points possible, raw percent), the percent rounded to 2 decimals."""
    results = list(results)
    earned = sum(r.earned for r in results)
    possible = sum(r.points for r in results)
    raw = round(100.0 * earned / possible, 2) if possible else 0.0
    return earned, possible, raw


@dataclass(frozen=True)
class Deadlines:
    """What the late rule needs to know about one assignment for one student."""

    lecture_day: dt.date
    last_lecture_day: dt.date
    timezone: ZoneInfo
    deadline_time: dt.time
    policy: LatePolicy = LatePolicy.CAP
    extension: Extension | None = None


def score(results: Iterable[CheckResult], submitted_at: dt.datetime | None,
          deadlines: Deadlines) -> Score:
    """Apply the late rule to the raw score of ``results`` submitted at ``submitted_at``."""
    earned, possible, raw = raw_percent(results)
    decision = late_cap(submitted_at, deadlines)
    final = final_score(raw, decision.cap, deadlines.policy)
    return Score(earned, possible, raw, decision.cap,
                 None if final is None else round(final, 2), decision.reason)


def late_cap(submitted_at: dt.datetime | None, deadlines: Deadlines) -> LateDecision:
    tiers = late_tiers(deadlines.lecture_day, deadlines.last_lecture_day,
                       deadlines.timezone, deadlines.deadline_time, deadlines.extension)
    return late_decision(submitted_at, tiers)
