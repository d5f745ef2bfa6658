"""What an import found in an LMS's download, before anything is stored: the records both LMSs'
readers return, and the rules they share (which file of a submission is graded, how a time
without a zone is read).
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from grader.lms.archive import Member
from grader.text import LINE_CHARS, one_line

NOTEBOOK_SUFFIX = ".ipynb"
NAME_CHARS = 120  # a file or folder name written from an LMS's name


@dataclass(frozen=True)
class Upload:
    """One file of the download, as its member's name tells: whose (the LMS's id of the student
    and the name it wrote) and the file's own name."""

    member: Member
    lms_user: str  # Moodle: the participant id; Canvas: the user id, or anon_<id>
    lms_name: str  # the student's name as the file name gives it (may be empty)
    filename: str  # the file's name as the student uploaded it (as the LMS cleaned it)
    late: bool = False  # Canvas: _LATE in the name (Canvas's due date, not the course's)
    attachment: str = ""  # Canvas: the attachment id


@dataclass(frozen=True)
class Handin:
    """One student's submission of one homework, mapped to the roster, with its time."""

    student: str
    assignment: str
    notebook: Upload  # the file graded
    uploads: tuple[Upload, ...]  # every file of the submission (stored beside the notebook)
    submitted_at: dt.datetime | None  # aware; None: unknown, never on time
    time_source: str  # where the time comes from, with the zone it was read in
    lms_user: str
    lms_name: str
    lms_status: str = ""  # what the LMS says of it (Moodle's Status, Canvas's late flag)


@dataclass(frozen=True)
class Intake:
    """Everything an import takes from one download: the submissions and what was left aside."""

    lms: str  # "moodle" or "canvas"
    assignment: str
    download: Path
    handins: tuple[Handin, ...]
    notes: tuple[str, ...] = ()  # left aside, and why (an online text, a draft), for the log

    @property
    def unknown_times(self) -> int:
        return sum(h.submitted_at is None for h in self.handins)


def choose_notebook(uploads: Iterable[Upload]) -> tuple[Upload | None, str]:
    """The file of a submission to grade: its one notebook; with no notebook, its one file
    (graded as malformed, with the reason); ``(None, why)`` when that is not one file."""
    files = sorted(uploads, key=lambda u: u.member.name)
    notebooks = [u for u in files if u.filename.lower().endswith(NOTEBOOK_SUFFIX)]
    if len(notebooks) == 1:
        return notebooks[0], ""
    if len(notebooks) > 1:
        names = ", ".join(quoted(u.member.name) for u in notebooks)
        return None, f"{len(notebooks)} notebooks in one submission ({names}): which to grade?"
    if len(files) == 1:
        return files[0], ""
    names = ", ".join(quoted(u.member.name) for u in files[:10])
    return None, f"no notebook among the {len(files)} files of one submission ({names})"


def same_names(uploads: Iterable[Upload]) -> list[str]:
    """Files of one submission that would land on one name when stored side by side."""
    seen: dict[str, str] = {}
    clashes = []
    for u in uploads:
        name = safe_name(u.filename)
        if name in seen:
            clashes.append(f"{quoted(u.member.name)} and {quoted(seen[name])} are both "
                           f"{quoted(name)} in one submission")
        seen[name] = u.member.name
    return clashes


def safe_name(text: str) -> str:
    """``text`` as one file or folder name: NFC, no separator, control character or leading dot,
    at most ``NAME_CHARS`` characters (the extension kept)."""
    text = unicodedata.normalize("NFC", text)
    text = "".join("_" if ch in '/\\:*?"<>|' or unicodedata.category(ch)[0] == "C" else ch
                   for ch in text).strip().lstrip(".")
    if len(text) > NAME_CHARS:
        stem, dot, suffix = text.rpartition(".")
        keep = suffix if dot and len(suffix) <= 10 else ""
        text = text[:NAME_CHARS - len(keep) - 1] + ("." + keep if keep else "")
    return text or "_"


def quoted(text: str) -> str:
    """A name or value from a download, as an error message quotes it: bounded, in quotes."""
    return repr(one_line(text, LINE_CHARS))


def in_zone(moment: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    """A naive time read in ``tz``; an aware one as it is."""
    return moment.replace(tzinfo=tz) if moment.tzinfo is None else moment
