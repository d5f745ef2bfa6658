"""Grades and feedback in the LMS's own import formats (``grader export --format moodle|canvas``).

Moodle: the grading worksheet the instructor downloaded, filled in (every column and row kept as
Moodle wrote them): ``Grade`` is the final score after the late rule on the worksheet's
``Maximum Grade``, ``Feedback comments`` the feedback as HTML (Moodle stores it as HTML); and a
zip of each student's HTML feedback page named as Moodle's "Upload multiple feedback files in a
zip" reads it (``feedback/file/importziplib.php``: ``<Full name>_<participant id>_
assignfeedback_file/<file>``). Canvas: its gradebook import CSV with one column per homework
exported, in points.

A final that is pending (the submission time unknown) is left blank, never 0: Moodle and Canvas
both leave a blank grade as it is. The feedback is the Markdown feedback of the row's one view
(``grader.output.feedback``); Moodle's copy is that Markdown rendered to HTML (headings, lists,
quotes) with any HTML, link or emphasis in it shown as the text it is.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt

from grader.course.config import Course
from grader.errors import LmsError
from grader.lms import moodle
from grader.lms.manifest import manifest_path, read_manifest
from grader.lms.people import People
from grader.output.feedback import feedback_html, feedback_markdown
from grader.output.files import write_text_atomic
from grader.output.view import counted_rows, view
from grader.records import GradeRow
from grader.text import clip, csv_cell

COMMENT_CHARS = 20_000  # one comment in the LMS
CANVAS_STUDENT_COLUMNS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
# Raw HTML in the text is escaped, and a link or an image a student's text spells is shown as
# text; `*` and `_` stay as written: the check titles use them in formulas (2 * macs), which
# emphasis would swallow.
_MARKDOWN = MarkdownIt("commonmark", {"html": False}).disable(
    ["emphasis", "link", "image", "autolink"])
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Exported:
    """What an export wrote: its files, how many grades, how many finals left blank because
    they are pending, and what the instructor should know (a locked grade, a student missing)."""

    files: tuple[Path, ...]
    graded: int
    pending: int
    notes: tuple[str, ...] = ()


def comment_markdown(row: GradeRow, course: Course) -> str:
    """The comment for ``row``: its Markdown feedback, bounded."""
    return clip(feedback_markdown(view(row, course)), COMMENT_CHARS)


def comment_html(row: GradeRow, course: Course) -> str:
    """The comment for ``row`` as HTML (Moodle's feedback comments are HTML)."""
    return str(_MARKDOWN.render(comment_markdown(row, course)))


def points(final: float, maximum: float) -> str:
    """A final percent as points out of ``maximum``, two decimals."""
    return f"{final * maximum / 100:.2f}"


def _counted(course: Course, rows: Iterable[GradeRow], assignment: str) -> dict[str, GradeRow]:
    return {student: row for (student, hw), row in counted_rows(rows, course.counted).items()
            if hw == assignment}


# -- Moodle -----------------------------------------------------------------------------------


def moodle_prefix(full_name: str, participant: str) -> str:
    """The folder Moodle names a student's files by: the full name with ``_`` as spaces and
    the characters of its file names' rule (``PARAM_FILE``) removed, then the participant id."""
    name = re.sub(r"[\x00-\x1f\x7f&<>\"`|':\\/]", "", full_name.replace("_", " "))
    return f"{name}_{participant}"


def moodle_export(course: Course, rows: Iterable[GradeRow], people: People, worksheet: Path,
                  assignment: str, out_dir: Path) -> Exported:
    """Fill in Moodle's grading worksheet of ``assignment`` and write the feedback-files zip:
    ``out_dir/<assignment>-moodle-worksheet.csv`` and ``-moodle-feedback.zip``."""
    sheet = moodle.read_worksheet(worksheet, (moodle.IDENTIFIER, moodle.GRADE, moodle.GRADED))
    _same_assignment(worksheet, out_dir, assignment)
    if moodle.MAX_GRADE not in sheet.columns:
        raise LmsError(str(worksheet), [f"no column {moodle.MAX_GRADE!r}: a grade on a scale "
                                        f"cannot be exported (use points)"])
    _, problems = sheet.by_participant()
    counted = _counted(course, rows, assignment)
    filled, feedback, notes = [], {}, []
    graded = pending = 0
    seen = set()
    for i, row in enumerate(sheet.rows):
        row = dict(row)
        match = people.find(email=row.get(moodle.EMAIL, ""), lms_id=row.get(moodle.ID_NUMBER, ""))
        found = counted.get(match.student or "")
        if found is not None and match.student is not None:
            seen.add(match.student)
            pid = row[moodle.IDENTIFIER].strip().removeprefix("Participant").strip()
            if found.final is None:
                pending += 1
                row[moodle.GRADE] = ""
            else:
                try:
                    maximum = float(row.get(moodle.MAX_GRADE, "").replace(",", "."))
                except ValueError:
                    problems.append(f"{worksheet}, line {sheet.lines[i]}: {moodle.MAX_GRADE} "
                                    f"{row.get(moodle.MAX_GRADE)!r} is not a number")
                    continue
                row[moodle.GRADE] = points(found.final, maximum)
                if moodle.FEEDBACK in sheet.columns:
                    row[moodle.FEEDBACK] = comment_html(found, course)
                name = moodle_prefix(row.get(moodle.FULL_NAME, "") or "Participant", pid)
                feedback[f"{name}_assignfeedback_file/{assignment}-feedback.html"] = \
                    feedback_html(view(found, course))
                graded += 1
                if row.get(moodle.CAN_CHANGE, "").strip().lower() == "no":
                    notes.append(f"{match.student}: Moodle says the grade cannot be changed "
                                 f"(locked or released); it will skip it")
        filled.append(row)
    if problems:
        raise LmsError(str(worksheet), problems)
    notes += [f"{s}: graded, but not in the worksheet (not in the Moodle course?)"
              for s in sorted(set(counted) - seen)]
    if moodle.FEEDBACK not in sheet.columns:
        notes.append(f"the worksheet has no {moodle.FEEDBACK!r} column (enable feedback "
                     f"comments in the assignment's settings): the grades go without comments")
    sheet_out = out_dir / f"{assignment}-moodle-worksheet.csv"
    zip_out = out_dir / f"{assignment}-moodle-feedback.zip"
    write_text_atomic(sheet_out, _csv(sheet.columns, filled))
    write_zip_atomic(zip_out, feedback)
    return Exported((sheet_out, zip_out), graded, pending, tuple(notes))


def _same_assignment(worksheet: Path, out_dir: Path, assignment: str) -> None:
    """A worksheet whose course module is none of the downloads imported for ``assignment``
    (their names carry it) is another assignment's."""
    sheet_cm = moodle.course_module(worksheet.name, moodle.SHEET_CM)
    imported = {moodle.course_module(r["download"], moodle.ZIP_CM)
                for r in read_manifest(manifest_path(out_dir, assignment)) if r["lms"] == "moodle"}
    imported.discard(None)
    if sheet_cm and imported and sheet_cm not in imported:
        raise LmsError(str(worksheet), [
            f"the worksheet of another assignment: its course module is {sheet_cm}, {assignment}"
            f"'s downloads were of {', '.join(sorted(m for m in imported if m))}"])


def write_zip_atomic(path: Path, files: dict[str, str]) -> None:
    """A zip of ``files`` (name -> UTF-8 text), the same bytes for the same files, written to a
    temporary name and renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as zf:
            for name in sorted(files):
                info = zipfile.ZipInfo(name, _ZIP_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, files[name].encode("utf-8"))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _csv(columns: Sequence[str], rows: Iterable[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


# -- Canvas -----------------------------------------------------------------------------------


def canvas_columns(course: Course, assignments: Sequence[str]) -> list[str]:
    """The gradebook CSV's header: the student columns, then ``<title> (<Canvas id>)``."""
    titles = {a.id: a.title for a in course.assignments}
    return [*CANVAS_STUDENT_COLUMNS,
            *(f"{titles[hw]} ({course.lms.canvas_assignments[hw].id})" for hw in assignments)]


def canvas_assignments(course: Course, rows: Sequence[GradeRow],
                       wanted: Sequence[str] = ()) -> list[str]:
    """The homeworks to export (``wanted``, else every one with a grade), each with its Canvas
    assignment in ``course.toml``; ``LmsError`` names those without."""
    for hw in wanted:
        course.assignment(hw)
    graded = {r.assignment for r in rows}
    chosen = list(wanted) or [a.id for a in course.assignments if a.id in graded]
    unmapped = [hw for hw in chosen if hw not in course.lms.canvas_assignments]
    if unmapped:
        raise LmsError(str(course.path), [
            f"{hw}: no Canvas assignment: add `{hw} = {{ id = <the number in its Canvas URL>, "
            f"points = <its points> }}` under [lms.canvas_assignments]" for hw in unmapped])
    return chosen


def canvas_export(course: Course, rows: Sequence[GradeRow], people: People,
                  assignments: Sequence[str], out_path: Path) -> Exported:
    """Canvas's gradebook import CSV at ``out_path``: one row per student graded in any of
    ``assignments``, the final in points (blank when pending)."""
    counted = {hw: _counted(course, rows, hw) for hw in assignments}
    students = sorted({s for per in counted.values() for s in per})
    problems = [f"{s}: no lms_id (Canvas user id) on the roster" for s in students
                if not people.lms_id(s)]
    if problems:
        raise LmsError("the Canvas gradebook", problems)
    columns = canvas_columns(course, assignments)
    lines, graded, pending = [], 0, 0
    for student in students:
        line = {"Student": str(csv_cell(people.name(student))), "ID": people.lms_id(student),
                "SIS User ID": "", "SIS Login ID": "", "Section": ""}
        for hw, column in zip(assignments, columns[len(CANVAS_STUDENT_COLUMNS):], strict=True):
            row = counted[hw].get(student)
            line[column] = ""
            if row is not None and row.final is None:
                pending += 1
            elif row is not None and row.final is not None:
                line[column] = points(row.final, course.lms.canvas_assignments[hw].points)
                graded += 1
        lines.append(line)
    write_text_atomic(out_path, _csv(columns, lines))
    return Exported((out_path,), graded, pending)
