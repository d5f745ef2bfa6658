"""The gradebook as CSV tables: one row per student (``wide_table``), or one per student and
homework (``long_table``), from the rows that count (``grader.output.view.counted_rows``).

CSV cells that a spreadsheet would run as a formula are neutralised, and the file is written
to a temporary name first and then renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from grader.course.config import Course
from grader.output.files import write_text_atomic
from grader.output.standing import standing
from grader.output.view import counted_rows, display_status
from grader.records import GradeRow, Status
from grader.text import csv_cell

PER_HA = ("raw", "cap", "final", "status", "submitted_at")
LONG_COLUMNS = ["student", "assignment", "required", "raw", "cap", "final", "status",
                "submitted_at", "detail", "sha256", "seed", "graded_at"]


def wide_table(course: Course, rows: Iterable[GradeRow], now: dt.datetime,
               roster: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per student, sorted by student id, columns in the documented fixed order:
    ``student``, ``name``, ``email`` (from the roster, empty without one), then per assignment
    ``<id>_raw, <id>_cap, <id>_final, <id>_status, <id>_submitted_at``, then
    ``required_passed`` and ``verdict`` as of ``now`` (``passed``; ``failed``: can no longer
    pass; ``open``: can still pass, see ``grader.output.standing``). Students on the roster who
    submitted nothing appear with status ``missing`` and 0."""
    counted = counted_rows(rows, course.counted)
    people = {s.id: s for s in course.roster}
    listed = set(people) if roster is None else set(roster)
    students = sorted({s for s, _ in counted} | listed)
    records = []
    for student in students:
        person = people.get(student)
        record: dict[str, object] = {"student": student,
                                     "name": person.name if person else "",
                                     "email": person.email if person else ""}
        for a in course.assignments:
            row = counted.get((student, a.id))
            if row is None:
                values = {"raw": 0.0, "cap": None, "final": 0.0,
                          "status": Status.MISSING.value, "submitted_at": None}
            else:
                values = {"raw": row.raw, "cap": row.cap, "final": row.final,
                          "status": display_status(row).value,
                          "submitted_at": row.submitted_at}
            for key in PER_HA:
                record[f"{a.id}_{key}"] = values[key]
        where = standing(course, student, counted, now)
        record["required_passed"] = where.passed
        record["verdict"] = where.verdict.value
        records.append(record)
    columns = ["student", "name", "email"] + \
        [f"{a.id}_{k}" for a in course.assignments for k in PER_HA] + \
        ["required_passed", "verdict"]
    return pd.DataFrame.from_records(records, columns=columns)


def long_table(course: Course, rows: Iterable[GradeRow]) -> pd.DataFrame:
    """One row per (student, assignment) that counts, for LMS import; sorted by both."""
    required = {a.id: a.required for a in course.assignments}
    records = [{"student": r.student, "assignment": r.assignment,
                "required": "yes" if required.get(r.assignment, True) else "no",
                "raw": r.raw, "cap": r.cap, "final": r.final,
                "status": display_status(r).value,
                "submitted_at": r.submitted_at, "detail": r.detail, "sha256": r.sha256,
                "seed": r.seed, "graded_at": r.graded_at}
               for (_, _), r in sorted(counted_rows(rows, course.counted).items())]
    return pd.DataFrame.from_records(records, columns=LONG_COLUMNS)


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` as UTF-8 CSV at ``path`` atomically, every text cell on one line and
    formulas neutralised (``grader.text.csv_cell``)."""
    safe = frame.map(csv_cell)
    write_text_atomic(path, safe.to_csv(index=False, float_format="%.2f", lineterminator="\n"))
