"""Late-submission and pass rules from the syllabus, as pure functions.

Nothing here reads the clock, a file or a database: the submission time, the course dates and
the raw score are passed in. Scores and caps are percent (0..100 floats). Datetimes must be
aware; naive ones are rejected with ``ValueError``. Deadlines are wall times in the course's
time zone (``zoneinfo``), so DST is whatever the tz database says for that day.

Public: ``LatePolicy``, ``Tier``, ``Extension``, ``LateDecision``, ``late_tiers``,
``late_decision``, ``final_score``, ``passes``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

__all__ = [
    "Extension",
    "LateDecision",
    "LatePolicy",
    "Tier",
    "final_score",
    "late_decision",
    "late_tiers",
    "passes",
]

_MINUTE = timedelta(minutes=1)


class LatePolicy(enum.Enum):
    """How a late cap turns a raw score into a final one (course setting)."""

    CAP = "cap"  # final = min(raw, cap)
    SCALE = "scale"  # final = raw * cap / 100


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} is a naive datetime ({value!r}); give it a time zone")


def _require_percent(value: float, name: str) -> None:
    if math.isnan(value) or not 0.0 <= value <= 100.0:
        raise ValueError(f"{name} must be a percent in 0..100, got {value!r}")


@dataclass(frozen=True)
class Tier:
    """One late tier: submissions strictly before ``deadline`` get at most ``cap`` percent."""

    deadline: datetime  # aware; exclusive upper bound (first instant that is too late)
    cap: float  # percent
    label: str  # e.g. "D+1 11:59", "D+2 11:59", "last lecture day 11:59"

    def __post_init__(self) -> None:
        _require_aware(self.deadline, "Tier.deadline")
        _require_percent(self.cap, "Tier.cap")


@dataclass(frozen=True)
class Extension:
    """A per-(student, HA) extension; exactly one field is set.

    ``extra``: elapsed time added to every tier deadline (computed in UTC, so 24 h across a DST
    change moves the wall-clock deadline by an hour). ``new_base_date``: replaces the lecture
    day D for this student's D+1 and D+2 tiers (whole calendar days, same wall time).
    """

    extra: timedelta | None = None
    new_base_date: date | None = None

    def __post_init__(self) -> None:
        if (self.extra is None) == (self.new_base_date is None):
            raise ValueError("Extension needs exactly one of extra and new_base_date")
        if self.extra is not None and self.extra <= timedelta(0):
            raise ValueError(f"Extension.extra must be positive, got {self.extra!r}")
        if isinstance(self.new_base_date, datetime):
            raise ValueError("Extension.new_base_date must be a date, not a datetime")


@dataclass(frozen=True)
class LateDecision:
    """The late cap for one submission, with the tiers that explain it."""

    cap: float | None  # percent, None when the time is unknown
    tier: Tier | None  # the tier met, None when late past all tiers or time unknown
    missed: Tier | None  # the latest deadline missed, the one that set the cap (None: on time)
    reason: str  # one sentence of student feedback


def _bound(day: date, deadline_time: time, tz: ZoneInfo) -> datetime:
    """First instant after the whole minute ``deadline_time`` on ``day``, in ``tz``.

    The extra minute is elapsed time (added in UTC), so a deadline minute next to a DST jump
    still lasts 60 seconds. An ambiguous wall time takes its first occurrence (fold=0).
    """
    last_minute = datetime.combine(day, deadline_time, tzinfo=tz)
    return (last_minute.astimezone(UTC) + _MINUTE).astimezone(tz)


def late_tiers(
    lecture_day: date,
    last_lecture_day: date,
    tz: ZoneInfo,
    deadline_time: time = time(11, 59),
    extension: Extension | None = None,
) -> tuple[Tier, ...]:
    """The non-empty late tiers for an HA given on ``lecture_day``, earliest deadline first.

    Caps are 100 % before the end of minute ``deadline_time`` (local, in ``tz``) on D+1, 75 %
    on D+2 and 50 % on ``last_lecture_day``; later submissions get 0 (see ``late_decision``).
    A tier whose deadline is at or before the previous kept tier's is empty and left out, so
    caps never rise with lateness: an HA given on (or a day before) the last lecture day has no
    50 % tier, and one given two days before has its 50 % tier coincide with D+2 (left out).

    Extensions: ``extra`` is added to every deadline, the last-lecture-day one included. A
    ``new_base_date`` D' gives tiers D'+1 and D'+2; the last-lecture-day deadline does not
    move. If it falls at or before D'+2 the 50 % tier is empty, as for a late-given HA: the
    student loses no time, since the 75 % window then covers it. (This is the same as taking
    max(last lecture day, D'+2) for the final tier: a tier equal to D'+2 is empty.)
    """
    for value, name in ((lecture_day, "lecture_day"), (last_lecture_day, "last_lecture_day")):
        if isinstance(value, datetime):
            raise ValueError(f"{name} must be a date, not a datetime")
    if lecture_day > last_lecture_day:
        raise ValueError(f"lecture_day {lecture_day} is after last_lecture_day {last_lecture_day}")
    if deadline_time.tzinfo is not None:
        raise ValueError("deadline_time must be a wall time without tzinfo; the zone is tz")
    if deadline_time.second or deadline_time.microsecond:
        raise ValueError(f"deadline_time names a whole minute, got {deadline_time}")

    base, suffix = lecture_day, ""
    if extension is not None:
        suffix = " (extended)"
        if extension.new_base_date is not None:
            if extension.new_base_date < lecture_day:
                raise ValueError("new_base_date is before lecture_day; that is not an extension")
            base = extension.new_base_date
    hhmm = deadline_time.strftime("%H:%M")
    planned = (
        (base + timedelta(days=1), 100.0, f"D+1 {hhmm}"),
        (base + timedelta(days=2), 75.0, f"D+2 {hhmm}"),
        (last_lecture_day, 50.0, f"last lecture day {hhmm}"),
    )
    tiers: list[Tier] = []
    for day, cap, label in planned:
        deadline = _bound(day, deadline_time, tz)
        if extension is not None and extension.extra is not None:
            deadline = (deadline.astimezone(UTC) + extension.extra).astimezone(tz)
        if tiers and deadline <= tiers[-1].deadline:
            continue  # empty tier: its window is inside an earlier, higher-cap one
        tiers.append(Tier(deadline=deadline, cap=cap, label=label + suffix))
    return tuple(tiers)


def _stamp(moment: datetime) -> str:
    return moment.isoformat(sep=" ", timespec="seconds")


def late_decision(submitted_at: datetime | None, tiers: tuple[Tier, ...]) -> LateDecision:
    """Decide the cap (percent) for a submission made at ``submitted_at``.

    The cap is that of the first tier whose deadline is after ``submitted_at``; past every tier
    it is 0. ``None`` (no usable timestamp) is never on time: the cap is ``None``. Instants are
    compared in UTC, so the offset ``submitted_at`` carries does not matter.
    """
    if not tiers:
        raise ValueError("tiers is empty; build it with late_tiers()")
    utc_deadlines = [t.deadline.astimezone(UTC) for t in tiers]
    if any(a >= b for a, b in zip(utc_deadlines, utc_deadlines[1:], strict=False)) or any(
        a.cap < b.cap for a, b in zip(tiers, tiers[1:], strict=False)
    ):
        raise ValueError("tiers must have rising deadlines and non-rising caps")
    if submitted_at is None:
        return LateDecision(
            cap=None,
            tier=None,
            missed=None,
            reason="The submission has no usable time stamp, so no late cap can be given; "
            "it is not counted as on time.",
        )
    _require_aware(submitted_at, "submitted_at")

    local = submitted_at.astimezone(tiers[0].deadline.tzinfo)
    moment = submitted_at.astimezone(UTC)
    met = next((i for i, d in enumerate(utc_deadlines) if moment < d), None)
    tier = None if met is None else tiers[met]
    missed = tiers[-1] if met is None else (tiers[met - 1] if met > 0 else None)
    cap = 0.0 if tier is None else tier.cap
    if missed is None:
        where = f"before the {tiers[0].label} deadline (late from {_stamp(tiers[0].deadline)})"
    else:
        where = f"after the {missed.label} deadline (late from {_stamp(missed.deadline)})"
    reason = f"Submitted {_stamp(local)} ({local.tzinfo}), {where}, so the cap is {cap:g} %."
    return LateDecision(cap=cap, tier=tier, missed=missed, reason=reason)


def final_score(raw: float, cap: float | None, policy: LatePolicy = LatePolicy.CAP) -> float | None:
    """Final percent from a raw percent and a late cap; ``None`` when the cap is unknown.

    ``CAP``: min(raw, cap). ``SCALE``: raw * cap / 100.
    """
    _require_percent(raw, "raw")
    if cap is None:
        return None
    _require_percent(cap, "cap")
    if policy is LatePolicy.CAP:
        return min(raw, cap)
    return raw * cap / 100.0


def passes(
    required_finals: Iterable[float | None], min_percent: float = 50.0, min_count: int = 4
) -> tuple[int, bool]:
    """(number of required HAs with final >= ``min_percent``, whether that is >= ``min_count``).

    Pass one final percent per required HA (optional HAs do not count). ``None`` (no
    submission, or no usable time stamp) counts as not reaching ``min_percent``.
    """
    _require_percent(min_percent, "min_percent")
    if min_count < 0:
        raise ValueError(f"min_count must be >= 0, got {min_count}")
    count = 0
    for final in required_finals:
        if final is None:
            continue
        _require_percent(final, "final")
        if final >= min_percent:
            count += 1
    return count, count >= min_count
