"""Moodle's assignment, as its source writes it (moodle/moodle, ``mod/assign``).

"Download all submissions" (``classes/downloader.php``): a zip named
``<course>-<assignment>[-<group>]-<course module id>.zip`` holding, in folder mode (the default),
``<Full name>_<participant id>_assignsubmission_file/<file>`` (the files as uploaded, folders
kept), otherwise ``<Full name>_<participant id>_assignsubmission_file_<file>``. The full name has
its ``_`` turned into spaces; the participant id is the number of the worksheet's
``Participant N``. Other submission plugins (an online text) write ``..._assignsubmission_<type>``.

The offline grading worksheet (``gradingtable.php``, ``Grades-<course>-<assignment>-<cm id>.csv``):
``Identifier`` (``Participant N``), ``Full name``, the site's identity fields (``Email address``,
``ID number``), ``Status``, ``Grade``, ``Maximum Grade``, ``Grade can be changed``,
``Last modified (submission)``, ``Last modified (grade)``, ``Feedback comments``. Its times are
the downloading user's local times (``Wednesday, 4 November 2026, 11:58 AM``), with no zone:
the import reads them in a zone it is given and says which. Moodle reads an uploaded worksheet by
its English header texts (``feedback/offline/importgradeslib.php``); download it with the
interface in English.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from grader.errors import LmsError
from grader.lms import archive
from grader.lms.intake import Handin, Intake, Upload, choose_notebook, quoted, same_names
from grader.lms.people import People
from grader.pipeline.discover import parse_timestamp

IDENTIFIER = "Identifier"
FULL_NAME = "Full name"
EMAIL = "Email address"
ID_NUMBER = "ID number"
STATUS = "Status"
GRADE = "Grade"
MAX_GRADE = "Maximum Grade"
CAN_CHANGE = "Grade can be changed"
SUBMITTED = "Last modified (submission)"
GRADED = "Last modified (grade)"
FEEDBACK = "Feedback comments"

FILE_PLUGIN = "assignsubmission_file"
_MEMBER = re.compile(r"^(?P<name>[^_/]*)_(?P<pid>\d+)_(?P<plugin>assignsubmission_[a-z0-9]+)"
                     r"(?:/(?P<path>.+)|_(?P<flat>[^/]+))$")
_PARTICIPANT = re.compile(r"^Participant\s*(\d+)$")
ZIP_CM = re.compile(r"-(\d+)\.zip$", re.IGNORECASE)
SHEET_CM = re.compile(r"^Grades-.*-(\d+)\.csv$", re.IGNORECASE)
_MONTHS = {m: i for i, m in enumerate(
    ("january", "february", "march", "april", "may", "june", "july", "august", "september",
     "october", "november", "december"), start=1)}
_TIME = re.compile(r"^(?:[A-Za-z]+,\s*)?(?P<day>\d{1,2})\s+(?P<month>[A-Za-z]+)\s+(?P<year>\d{4}),?"
                   r"\s+(?P<hour>\d{1,2}):(?P<minute>\d{2})(?:\s*(?P<half>[AaPp][Mm]))?$")
NO_TIME = ("", "-")


@dataclass(frozen=True)
class Worksheet:
    """A grading worksheet as downloaded: its columns in order and its rows, every cell kept."""

    path: Path
    columns: tuple[str, ...]
    rows: tuple[dict[str, str], ...]
    lines: tuple[int, ...]  # each row's line in the file

    def by_participant(self) -> tuple[dict[str, int], list[str]]:
        """Participant id -> row index, and the rows whose Identifier does not parse."""
        found: dict[str, int] = {}
        problems = []
        for i, row in enumerate(self.rows):
            match = _PARTICIPANT.match(row.get(IDENTIFIER, "").strip())
            where = f"{self.path}, line {self.lines[i]}"
            if match is None:
                problems.append(f"{where}: Identifier {quoted(row.get(IDENTIFIER, ''))} is not "
                                f"'Participant N'")
            elif match[1] in found:
                problems.append(f"{where}: participant {match[1]} listed twice")
            else:
                found[match[1]] = i
        return found, problems


def read_worksheet(path: Path, required: Sequence[str]) -> Worksheet:
    """The worksheet at ``path``; ``LmsError`` when it is not a CSV with the ``required``
    columns."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            columns = tuple(reader.fieldnames or ())
            rows, lines = [], []
            for row in reader:
                rows.append({k: (v or "") for k, v in row.items() if isinstance(k, str)})
                lines.append(reader.line_num)
    except FileNotFoundError:
        raise LmsError(str(path), ["no such file"]) from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LmsError(str(path), [f"cannot read it as a UTF-8 CSV: {exc}"]) from None
    missing = [c for c in required if c not in columns]
    if missing:
        raise LmsError(str(path), [
            f"no column {', '.join(map(repr, missing))}: not a Moodle grading worksheet, or one "
            f"downloaded in another language (switch Moodle to English and download it again)"])
    return Worksheet(path, columns, tuple(rows), tuple(lines))


def parse_time(text: str, tz: ZoneInfo) -> dt.datetime | None:
    """A worksheet's time (``Wednesday, 4 November 2026, 11:58 AM``, or ISO 8601) read in
    ``tz``; None for ``-`` or nothing; ``ValueError`` for anything else."""
    text = text.strip()
    if text in NO_TIME:
        return None
    match = _TIME.match(text)
    if match is None:
        return parse_timestamp(text, tz)
    month = _MONTHS.get(match["month"].lower()) or next(
        (i for name, i in _MONTHS.items() if name[:3] == match["month"].lower()), None)
    hour = int(match["hour"])
    if match["half"]:
        if not 1 <= hour <= 12:
            raise ValueError(f"hour {hour} with {match['half']}")
        hour = hour % 12 + (12 if match["half"].lower() == "pm" else 0)
    if month is None:
        raise ValueError(f"unknown month {quoted(match['month'])}")
    return dt.datetime(int(match["year"]), month, int(match["day"]), hour, int(match["minute"]),
                       tzinfo=tz)


def parse_member(member: archive.Member) -> tuple[Upload | None, str]:
    """The upload a member's name describes; ``(None, why)`` when it is not a file submission
    (an online text: left aside) or does not parse (a problem)."""
    match = _MEMBER.match(member.name)
    if match is None:
        return None, (f"member {quoted(member.name)}: not a Moodle submission name (<Full name>_"
                      f"<participant id>_{FILE_PLUGIN}/<file>, or ..._{FILE_PLUGIN}_<file>)")
    if match["plugin"] != FILE_PLUGIN:
        return None, ""
    filename = (match["path"] or match["flat"]).rsplit("/", 1)[-1]
    return Upload(member, match["pid"], match["name"], filename), ""


def course_module(name: str, pattern: re.Pattern[str]) -> str | None:
    match = pattern.search(name)
    return match[1] if match else None


def _letters(text: str) -> str:
    return "".join(ch for ch in text.casefold() if ch.isalnum())


def read_download(people: People, zip_path: Path, worksheet_path: Path, assignment: str,
                  tz: ZoneInfo) -> Intake:
    """The submissions of ``assignment`` in Moodle's download ``zip_path``, mapped to the
    roster through the worksheet ``worksheet_path`` (its emails or ID numbers), each with the
    worksheet's submission time read in ``tz``. ``LmsError`` lists everything not understood."""
    zip_cm = course_module(zip_path.name, ZIP_CM)
    sheet_cm = course_module(worksheet_path.name, SHEET_CM)
    if zip_cm and sheet_cm and zip_cm != sheet_cm:
        raise LmsError(str(worksheet_path), [
            f"the worksheet of another assignment: its course module is {sheet_cm}, the "
            f"download's ({zip_path.name}) is {zip_cm}"])
    members = archive.members(zip_path)
    sheet = read_worksheet(worksheet_path, (IDENTIFIER, SUBMITTED))
    rows, problems = sheet.by_participant()
    uploads: dict[str, list[Upload]] = {}
    notes = []
    for member in members:
        upload, why = parse_member(member)
        if upload is not None:
            uploads.setdefault(upload.lms_user, []).append(upload)
        elif why:
            problems.append(why)
        else:
            notes.append(f"{member.name}: not a file submission (left aside)")
    handins: list[Handin] = []
    owner: dict[str, str] = {}
    for pid, files in sorted(uploads.items(), key=lambda item: int(item[0])):
        found = _handin(people, sheet, rows.get(pid), pid, files, assignment, tz, problems)
        if found is None:
            continue
        if found.student in owner:
            problems.append(f"participants {owner[found.student]} and {pid} are both "
                            f"{found.student!r} on the roster")
        owner[found.student] = pid
        if "draft" in found.lms_status.lower():
            notes.append(f"{found.student}: Moodle says {quoted(found.lms_status)}; graded as "
                         f"handed in")
        handins.append(found)
    if problems:
        raise LmsError(f"{zip_path} with {worksheet_path.name}", problems)
    return Intake("moodle", assignment, zip_path, tuple(handins), tuple(notes))


def _handin(people: People, sheet: Worksheet, index: int | None, pid: str, files: list[Upload],
            assignment: str, tz: ZoneInfo, problems: list[str]) -> Handin | None:
    first = files[0].member.name
    if index is None:
        problems.append(f"member {quoted(first)}: participant {pid} is not in the worksheet (the "
                        f"worksheet of another assignment?)")
        return None
    row, line = sheet.rows[index], f"{sheet.path.name}, line {sheet.lines[index]}"
    name = row.get(FULL_NAME, "").strip()
    said = files[0].lms_name
    if name and said != "Participant" and _letters(said) != _letters(name):
        problems.append(f"member {quoted(first)}: the download says {quoted(said)}, the "
                        f"worksheet's participant {pid} is {quoted(name)} ({line}): the "
                        f"worksheet of another assignment?")
        return None
    match = people.find(email=row.get(EMAIL, ""), lms_id=row.get(ID_NUMBER, ""))
    if match.student is None:
        problems.append(f"member {quoted(first)}: a file of no known student: participant {pid} "
                        f"({line}): {match.problem}")
        return None
    notebook, why = choose_notebook(files)
    clashes = same_names(files)
    if notebook is None or clashes:
        problems += [f"participant {pid} ({match.student}): {p}" for p in [why, *clashes] if p]
        return None
    try:
        submitted = parse_time(row.get(SUBMITTED, ""), tz)
    except ValueError as exc:
        problems.append(f"{line}: {SUBMITTED} {quoted(row.get(SUBMITTED, ''))} does not "
                        f"parse: {exc}")
        return None
    source = (f"Moodle worksheet, read in {tz.key}" if submitted is not None
              else "none: the worksheet gives no submission time")
    return Handin(match.student, assignment, notebook, tuple(files), submitted, source, pid,
                  name or said, row.get(STATUS, "").strip())
