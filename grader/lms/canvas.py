"""Canvas's assignment, as its source writes it (instructure/canvas-lms).

"Download Submissions" (``lib/content_zipper.rb``): a flat zip
``<course>-<assignment>_submissions.zip`` of files named
``<name>[_LATE]_<user id>_<attachment id>_<file>``, where ``<name>`` is the student's sortable
name ("Doe, Jane"), lower-cased, every character but letters, digits and ``_`` removed
(``doejane``), ``_LATE`` marks Canvas's own lateness, and ``<file>`` is the name uploaded. Under
anonymous grading the name and user id give way to ``anon_<anonymous id>``
(``[LATE_]anon_<id>_<attachment id>_<file>``). An online text entry is ``<name>_<id>_text.html``,
a URL ``..._link.html``. The zip holds no submission time: it comes from Canvas's REST API
(``canvas_api``) or from a CSV (``read_times``).

The gradebook import CSV (``app/models/gradebook_importer.rb``): ``Student``, ``ID``,
``SIS User ID``, ``SIS Login ID``, ``Section``, then one column per assignment headed
``<name> (<assignment id>)``; Canvas finds the student by ``ID`` and the assignment by the id in
the header; a column left out is left unchanged (``grader.lms.export``).
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

from grader.errors import LmsError
from grader.lms import archive
from grader.lms.intake import Handin, Intake, Upload, choose_notebook, quoted, same_names
from grader.lms.people import People
from grader.pipeline.discover import parse_timestamp

_NAMED = re.compile(r"^(?P<name>\w*?)(?P<late>_LATE)?_(?P<uid>\d+)_(?P<aid>\d+)_(?P<file>.+)$")
_ANON = re.compile(r"^(?:(?P<late>LATE)_)?anon_(?P<anon>[A-Za-z0-9]+)_(?P<aid>\d+)_(?P<file>.+)$")
_ONLINE = re.compile(r"^.+_(?:text|link)\.html$")
TIMES_COLUMNS = ("user_id", "submitted_at")  # optional: anonymous_id, email


@dataclass(frozen=True)
class Attempt:
    """What Canvas says of one student's submission: when (None: unknown), whether it was
    late by Canvas's due date, and the attachments of each attempt, by attachment id."""

    submitted_at: dt.datetime | None
    late: bool = False
    attachment_times: Mapping[str, dt.datetime | None] = field(default_factory=dict)
    email: str = ""


@dataclass(frozen=True)
class Times:
    """The submission times of one Canvas assignment, by user id, and where they come from."""

    source: str
    by_user: Mapping[str, Attempt]
    anonymous: Mapping[str, str] = field(default_factory=dict)  # anonymous id -> user id

    def of(self, upload: Upload) -> tuple[dt.datetime | None, str]:
        """The time of the attempt ``upload`` belongs to (by its attachment id where Canvas
        lists it, else the submission's latest), and the source in words."""
        attempt = self.by_user.get(upload.lms_user)
        if attempt is None:
            return None, f"none: {self.source} has no submission of user {upload.lms_user}"
        moment = attempt.attachment_times.get(upload.attachment, attempt.submitted_at)
        return moment, self.source if moment is not None else f"none: {self.source} gives none"


NO_TIMES = Times("none (no --times and no --canvas given)", {})


def parse_member(member: archive.Member) -> tuple[Upload | None, str]:
    """The upload a member's name describes; ``(None, "")`` for an online text or URL entry
    (left aside), ``(None, why)`` for a name that does not parse."""
    if "/" in member.name:
        return None, f"member {quoted(member.name)}: Canvas's download has no folders"
    match = _ANON.match(member.name)
    if match is not None:
        return Upload(member, f"anon_{match['anon']}", "", match["file"], bool(match["late"]),
                      match["aid"]), ""
    match = _NAMED.match(member.name)
    if match is not None:
        return Upload(member, match["uid"], match["name"], match["file"], bool(match["late"]),
                      match["aid"]), ""
    if _ONLINE.match(member.name):
        return None, ""
    return None, (f"member {quoted(member.name)}: not a Canvas submission name (<name>[_LATE]_"
                  f"<user id>_<attachment id>_<file>, or anon_<id>_<attachment id>_<file>)")


def read_times(path: Path, tz: ZoneInfo) -> Times:
    """Submission times from a CSV with columns ``user_id,submitted_at`` (ISO 8601; a time
    without an offset is read in ``tz``; empty: unknown) and optionally ``anonymous_id`` and
    ``email``. A user listed several times (attempts) gets the latest time."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in TIMES_COLUMNS if c not in (reader.fieldnames or [])]
            rows = [(reader.line_num, row) for row in reader]
    except FileNotFoundError:
        raise LmsError(str(path), ["no such file"]) from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LmsError(str(path), [f"cannot read it as a UTF-8 CSV: {exc}"]) from None
    if missing:
        raise LmsError(str(path), [f"no column {', '.join(missing)} (expected "
                                   f"{','.join(TIMES_COLUMNS)}[,anonymous_id][,email])"])
    by_user: dict[str, Attempt] = {}
    anonymous: dict[str, str] = {}
    problems = []
    for line, row in rows:
        uid, text = (row.get("user_id") or "").strip(), (row.get("submitted_at") or "").strip()
        if not uid.isdigit():
            problems.append(f"line {line}: user_id {quoted(uid)} is not a Canvas user id")
            continue
        try:
            moment = parse_timestamp(text, tz) if text else None
        except ValueError as exc:
            problems.append(f"line {line}: submitted_at {quoted(text)} does not parse: {exc}")
            continue
        held = by_user.get(uid)
        if held is not None and (moment is None or (held.submitted_at or moment) > moment):
            moment = held.submitted_at
        by_user[uid] = Attempt(moment, email=(row.get("email") or "").strip())
        if (row.get("anonymous_id") or "").strip():
            anonymous[row["anonymous_id"].strip()] = uid
    if problems:
        raise LmsError(str(path), problems)
    return Times(f"{path.name}, times without an offset read in {tz.key}", by_user, anonymous)


def read_download(people: People, zip_path: Path, assignment: str, times: Times) -> Intake:
    """The submissions of ``assignment`` in Canvas's download ``zip_path``, mapped to the roster
    by Canvas user id (the roster's ``lms_id``, or the email ``times`` gives), each with its time
    from ``times``. ``LmsError`` lists everything not understood."""
    members = archive.members(zip_path)
    uploads: dict[str, list[Upload]] = {}
    problems: list[str] = []
    notes = []
    for member in members:
        upload, why = parse_member(member)
        if upload is not None:
            uid = times.anonymous.get(upload.lms_user.removeprefix("anon_"), upload.lms_user)
            uploads.setdefault(uid, []).append(upload)
        elif why:
            problems.append(why)
        else:
            notes.append(f"{member.name}: an online text or URL, not a file (left aside)")
    if times.by_user and uploads and not set(uploads) & set(times.by_user):
        problems.append(f"{times.source} names none of the download's students: the times of "
                        f"another assignment?")
    handins = []
    owner: dict[str, str] = {}
    for uid, files in sorted(uploads.items()):
        found = _handin(people, uid, files, assignment, times, problems)
        if found is not None:
            if found.student in owner:
                problems.append(f"Canvas users {owner[found.student]} and {uid} are both "
                                f"{found.student!r} on the roster")
            owner[found.student] = uid
            handins.append(found)
    if problems:
        raise LmsError(str(zip_path), problems)
    return Intake("canvas", assignment, zip_path, tuple(handins), tuple(notes))


def _handin(people: People, uid: str, files: list[Upload], assignment: str, times: Times,
            problems: list[str]) -> Handin | None:
    first = files[0].member.name
    if uid.startswith("anon_"):
        problems.append(f"member {quoted(first)}: anonymous grading hides the student "
                        f"({uid}); give --canvas, or --times with an anonymous_id column")
        return None
    attempt = times.by_user.get(uid)
    match = people.find(email=attempt.email if attempt else "", lms_id=uid)
    if match.student is None:
        problems.append(f"member {quoted(first)}: a file of no known student: Canvas user {uid}: "
                        f"{match.problem}")
        return None
    notebook, why = choose_notebook(files)
    clashes = same_names(files)
    if notebook is None or clashes:
        problems += [f"Canvas user {uid} ({match.student}): {p}" for p in [why, *clashes] if p]
        return None
    submitted, source = times.of(notebook)
    late = any(u.late for u in files) or (attempt is not None and attempt.late)
    return Handin(match.student, assignment, notebook, tuple(files), submitted, source, uid,
                  files[0].lms_name, "late by Canvas's due date" if late else "")
