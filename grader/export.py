"""Stage 6, export: the gradebook as CSV (one row per student, or one per student and HA),
per-student feedback, and the summary an instructor reads after a run.

CSV cells that a spreadsheet would run as a formula are neutralised, and every file is written
to a temporary name first and then renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from grader.config import Course
from grader.records import GradeRow, Outcome, Status
from grader.rules import passes

PER_HA = ("raw", "cap", "final", "status", "submitted_at")
LONG_COLUMNS = ["student", "assignment", "required", "raw", "cap", "final", "status",
                "submitted_at", "detail", "sha256", "seed", "graded_at"]
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def counted_rows(rows: Iterable[GradeRow], policy: str = "latest"
                 ) -> dict[tuple[str, str], GradeRow]:
    """The row that counts for each (student, assignment). ``latest``: the last submission
    (by submission time, then grading time; unknown times sort first). ``best``: the highest
    final, a known final beating an unknown one, ties going to the later submission."""
    counted: dict[tuple[str, str], GradeRow] = {}
    for row in sorted(rows, key=_submission_order):
        key = (row.student, row.assignment)
        held = counted.get(key)
        if policy == "best" and held is not None and _final_rank(held) > _final_rank(row):
            continue
        counted[key] = row
    return counted


def _final_rank(row: GradeRow) -> tuple[bool, float]:
    return (row.final is not None, row.final or 0.0)


def _submission_order(row: GradeRow) -> tuple[bool, dt.datetime, str]:
    # compare instants, not ISO text: offsets differ between timestamp files
    if row.submitted_at is None:
        return (False, dt.datetime.min.replace(tzinfo=dt.UTC), row.graded_at)
    return (True, dt.datetime.fromisoformat(row.submitted_at), row.graded_at)


def display_status(row: GradeRow) -> Status:
    """The status shown for a row: its own, or ``time_unknown`` when the notebook ran cleanly
    but its submission time is unknown (its final waits for the instructor). Any trouble
    running the notebook is shown first; the empty final tells the time is unknown."""
    if row.submitted_at is None and row.status is Status.OK:
        return Status.TIME_UNKNOWN
    return row.status


def wide_table(course: Course, rows: Iterable[GradeRow],
               roster: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per student, sorted by student id, columns in the documented fixed order:
    ``student``, ``name``, ``email`` (from the roster, empty without one), then per assignment
    ``<id>_raw, <id>_cap, <id>_final, <id>_status, <id>_submitted_at``, then
    ``required_passed`` and ``passed`` (yes / no / pending). Students on the roster who
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
        finals: list[float | None] = []
        unknown = 0
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
            if a.required:
                final = 0.0 if row is None else row.final
                finals.append(final)
                unknown += final is None
        count, passed = passes(finals, course.pass_rule.min_percent,
                               course.pass_rule.min_required)
        record["required_passed"] = count
        record["passed"] = ("yes" if passed else
                            "pending" if count + unknown >= course.pass_rule.min_required else "no")
        records.append(record)
    columns = ["student", "name", "email"] + \
        [f"{a.id}_{k}" for a in course.assignments for k in PER_HA] + \
        ["required_passed", "passed"]
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


def _neutralise(value: object) -> object:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` as UTF-8 CSV at ``path`` atomically, formulas neutralised."""
    safe = frame.map(_neutralise)
    write_text_atomic(path, safe.to_csv(index=False, float_format="%.2f", lineterminator="\n"))


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` as UTF-8 at ``path``, line ends as given, through a temporary file and a
    rename: a reader never sees half a file, and a failed write leaves the old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes it 0600; a shared gradebook is not private
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def feedback_text(row: GradeRow, title: str) -> str:
    """The feedback a student reads for one graded submission (Markdown)."""
    lines = [f"# {title} ({row.assignment}): feedback for {row.student}", ""]
    final = "pending (submission time unknown)" if row.final is None else f"{row.final:.2f} %"
    lines += [f"- Final score: **{final}**",
              f"- Checks: {row.earned:g} of {row.possible:g} points (raw {row.raw:.2f} %)",
              f"- Late rule: {row.late_reason or 'not applied'}",
              f"- Grading: {row.status.value} ({row.detail})", ""]
    errors, more = row.cell_error_list
    if errors:
        lines += ["## Cells that raised an error or were interrupted", ""]
        lines += [f"- {error}" for error in errors]
        if more:
            lines.append(f"- ... and {more} more")
        lines.append("")
    lines += ["## Checks", ""]
    for check in row.check_results:
        mark = "passed" if check.outcome is Outcome.PASSED else check.outcome.value
        lines.append(f"- [{mark}] `{check.name}` ({check.points:g} pt)")
        if check.message and check.outcome is not Outcome.PASSED:
            lines += [f"  > {line}" for line in check.message.splitlines()]
    return "\n".join(lines) + "\n"


def feedback_path(out_dir: Path, student: str, assignment: str, suffix: str) -> Path:
    """``out_dir/<student>/<assignment><suffix>``, the student id made safe as a folder name."""
    safe_student = student.replace(os.sep, "_").lstrip(".") or "_"
    return out_dir / safe_student / f"{assignment}{suffix}"


def write_feedback(course: Course, rows: Iterable[GradeRow], out_dir: Path) -> list[Path]:
    """One Markdown file per counted submission: ``out_dir/<student>/<assignment>.md``."""
    titles = {a.id: a.title for a in course.assignments}
    written = []
    for (student, assignment), row in sorted(counted_rows(rows, course.counted).items()):
        path = feedback_path(out_dir, student, assignment, ".md")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(feedback_text(row, titles.get(assignment, assignment)), encoding="utf-8")
        written.append(path)
    return written
