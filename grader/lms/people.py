"""Who a file of the LMS belongs to: the roster's student with that email or that LMS id.

The roster CSV (``course.toml``'s ``roster``, or ``--roster``) has the columns ``student,name,
email`` and, for the LMS, ``lms_id``: Canvas's user id (the number in its download's file names
and the ``ID`` column of its gradebook), or Moodle's ID number. An email is compared without
regard to case. A student is never found by a name: names are not unique and LMSs rewrite them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from grader.course.config import Course, RosterEntry, load_roster
from grader.errors import LmsError
from grader.text import LINE_CHARS, one_line


@dataclass(frozen=True)
class Match:
    """The student found (``None``: none), or why none could be taken."""

    student: str | None
    problem: str = ""


class People:
    """The roster, looked up by email and by LMS id."""

    def __init__(self, roster: Sequence[RosterEntry], source: str) -> None:
        if not roster:
            raise LmsError(source, ["no roster: the LMS's files are mapped to the roster's "
                                    "students by email or lms_id (set roster = \"roster.csv\" "
                                    "in course.toml, or pass --roster)"])
        self.entries = {e.id: e for e in roster}
        self.by_email: dict[str, list[str]] = {}
        self.by_lms_id: dict[str, str] = {}
        for entry in roster:
            if entry.email:
                self.by_email.setdefault(entry.email.casefold(), []).append(entry.id)
            if entry.lms_id:
                self.by_lms_id[entry.lms_id] = entry.id

    def find(self, email: str = "", lms_id: str = "") -> Match:
        """The student whose email is ``email`` or whose LMS id is ``lms_id`` (both agree when
        both are known)."""
        email, lms_id = one_line(email, LINE_CHARS), one_line(lms_id, LINE_CHARS)  # quoted below
        by_id = self.by_lms_id.get(lms_id.strip()) if lms_id.strip() else None
        by_email = self.by_email.get(email.strip().casefold(), []) if email.strip() else []
        if len(by_email) > 1:
            return Match(None, f"email {email!r} is on the roster {len(by_email)} times "
                               f"({', '.join(by_email)})")
        found = by_email[0] if by_email else None
        if by_id and found and by_id != found:
            return Match(None, f"lms_id {lms_id!r} is {by_id!r} on the roster, email "
                               f"{email!r} is {found!r}")
        student = by_id or found
        if student is None:
            known = " or ".join(f"{k} {v!r}" for k, v in (("email", email), ("lms_id", lms_id))
                                if v.strip()) or "no email and no LMS id"
            return Match(None, f"no student of the roster has {known}")
        return Match(student)

    def lms_id(self, student: str) -> str:
        entry = self.entries.get(student)
        return entry.lms_id if entry else ""

    def name(self, student: str) -> str:
        entry = self.entries.get(student)
        return (entry.name if entry else "") or student


def people(course: Course, roster: Path | None) -> People:
    """The course's roster, or the one at ``roster`` (a ``ConfigError`` names a bad file)."""
    if roster is not None:
        return People(load_roster(roster), str(roster))
    return People(course.roster, str(course.path))
