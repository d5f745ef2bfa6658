"""Where a student stands with the pass rule at a given time: one place for the CSV's verdict
and the report's pass table.

A student has *passed* once enough required homeworks reach the pass mark; has *failed* once
that can no longer happen (every homework that could still lift them is known and closed);
and is *open* while it can (a final is pending, or a late tier whose cap reaches the pass mark
has not ended yet). Time is passed in, never read.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass

from grader.course.config import Course
from grader.course.rules import late_tiers, passes
from grader.records import GradeRow


class Verdict(enum.Enum):
    """The pass rule's answer for one student at one time."""

    PASSED = "passed"  # enough required homeworks at the pass mark
    FAILED = "failed"  # can no longer pass
    OPEN = "open"  # can still pass: a final is pending, or a window that could lift it is open


@dataclass(frozen=True)
class Standing:
    """Where one student stands with the pass rule at the given time."""

    student: str
    name: str
    passed: int  # required homeworks at min_percent or more
    pending: int  # required homeworks whose final waits (a time unknown, a grader error)
    still_open: int  # required homeworks not passed that can still be handed in for a pass
    verdict: Verdict
    needed: int  # required homeworks the pass rule asks for

    @property
    def words(self) -> str:
        """The verdict as the report says it: "passed", "cannot pass", "one short",
        "needs N more"."""
        if self.verdict is Verdict.PASSED:
            return "passed"
        if self.verdict is Verdict.FAILED:
            return "cannot pass"
        return "one short" if self.short == 1 else f"needs {self.short} more"

    @property
    def short(self) -> int:
        """Required homeworks still to pass."""
        return max(0, self.needed - self.passed)


def still_open(course: Course, assignment: str, student: str, now: dt.datetime) -> bool:
    """Whether a submission made at ``now`` could still reach the pass mark: some late tier whose
    cap is at least ``min_percent`` ends after ``now`` (with the student's extension)."""
    a = course.assignment(assignment)
    tiers = late_tiers(a.lecture_day, course.last_lecture_day, course.timezone,
                       course.deadline_time, course.extensions.get((student, assignment)))
    return any(t.cap >= course.pass_rule.min_percent and t.deadline > now for t in tiers)


def standing(course: Course, student: str, counted: Mapping[tuple[str, str], GradeRow],
             now: dt.datetime) -> Standing:
    """``student``'s standing at ``now`` (aware) from the rows that count; a homework with no
    row counts as 0 until handed in."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now is a naive datetime ({now!r}); give it a time zone")
    rule = course.pass_rule
    required = [a.id for a in course.assignments if a.required]
    finals = [counted[(student, a)].final if (student, a) in counted else 0.0 for a in required]
    passed, _ = passes(finals, rule.min_percent, rule.min_required)
    pending = sum(final is None for final in finals)
    reopenable = sum(final is not None and final < rule.min_percent
                     and still_open(course, a, student, now)
                     for a, final in zip(required, finals, strict=True))
    if passed >= rule.min_required:
        verdict = Verdict.PASSED
    elif passed + pending + reopenable < rule.min_required:
        verdict = Verdict.FAILED
    else:
        verdict = Verdict.OPEN
    names = {p.id: p.name for p in course.roster}
    return Standing(student, names.get(student, ""), passed, pending, reopenable, verdict,
                    rule.min_required)
