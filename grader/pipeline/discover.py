"""Stage 1, discover: find the submissions in a folder and describe each as a record.

Layout (nbgrader's): ``<root>/<student>/<assignment>/<notebook>.ipynb`` with an optional
``timestamp.txt`` beside the notebook holding the submission time, e.g.
``2026-03-03 11:58:00.123456 Europe/Moscow`` or ``2026-03-03T11:58:00+03:00``. A time without
a zone is read in the course's zone. A missing or unreadable timestamp is recorded as such,
never taken as "on time". Symbolic links are never followed.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import re
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from grader.errors import SubmissionsError
from grader.records import Submission

TIMESTAMP_FILE = "timestamp.txt"
_ZONE_SUFFIX = re.compile(r"^(?P<time>.+?)\s+(?P<zone>[A-Za-z_]+(?:/[A-Za-z0-9_+\-]+)*)$")


def parse_timestamp(text: str, tz: ZoneInfo) -> dt.datetime:
    """Parse nbgrader's timestamp text into an aware datetime; raise ValueError if unreadable.

    Accepted: ISO 8601 with or without an offset, or a time followed by a zone name. A naive
    time is taken in ``tz``.
    """
    text = text.strip()
    if not text:
        raise ValueError("the file is empty")
    zone: dt.tzinfo | None = None
    match = _ZONE_SUFFIX.match(text)
    if match and not re.search(r"[+-]\d\d:?\d\d$|Z$", text):
        try:
            zone = ZoneInfo(match["zone"])
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {match['zone']!r}") from None
        text = match["time"]
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a date and time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone or tz)
    elif zone is not None:
        raise ValueError("both a UTC offset and a zone name")
    return moment


def _pick_notebook(folder: Path, preferred: str) -> tuple[Path | None, str]:
    notebooks = sorted(p for p in folder.iterdir() if p.suffix == ".ipynb"
                       and not p.name.startswith("."))
    named = [p for p in notebooks if p.name == preferred]
    chosen = named[0] if named else (notebooks[0] if len(notebooks) == 1 else None)
    if chosen is None:
        if not notebooks:
            return None, "no .ipynb notebook in the folder"
        names = ", ".join(p.name for p in notebooks)
        return None, f"several notebooks ({names}) and none named {preferred}"
    if chosen.is_symlink():
        return chosen, f"{chosen.name} is a symbolic link; submit the notebook file itself"
    if not chosen.is_file():
        return chosen, f"{chosen.name} is not a regular file"
    return chosen, ""


def _read_time(folder: Path, tz: ZoneInfo) -> tuple[dt.datetime | None, str]:
    stamp = folder / TIMESTAMP_FILE
    if not stamp.exists():
        return None, f"no {TIMESTAMP_FILE}"
    if stamp.is_symlink() or not stamp.is_file():
        return None, f"{TIMESTAMP_FILE} is not a regular file"
    try:
        with stamp.open(encoding="utf-8", errors="replace") as f:
            return parse_timestamp(f.read(200), tz), ""
    except ValueError as exc:
        return None, f"unreadable {TIMESTAMP_FILE}: {exc}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def discover(root: Path, notebooks: dict[str, str], tz: ZoneInfo) -> list[Submission]:
    """All submissions under ``root`` for the assignments in ``notebooks`` (id -> expected
    notebook file name), sorted by (assignment, student). Folders of other assignments and
    hidden folders are ignored; raise SubmissionsError if ``root`` is not a folder.

    ``root`` may also be a manifest CSV file (see ``discover_manifest``)."""
    if root.is_file() and root.suffix.lower() == ".csv":
        return discover_manifest(root, notebooks, tz)
    if not root.is_dir():
        raise SubmissionsError(f"{root}: no such submissions folder (or manifest CSV)")
    found = []
    for student_dir in sorted(root.iterdir()):
        if student_dir.name.startswith(".") or not student_dir.is_dir():
            continue
        for assignment, notebook_name in notebooks.items():
            folder = student_dir / assignment
            if not folder.exists() and not folder.is_symlink():
                continue
            if student_dir.is_symlink() or folder.is_symlink() or not folder.is_dir():
                found.append(Submission(student_dir.name, assignment, folder, "", None,
                                        "not read", f"{folder.name} is a symbolic link or not "
                                                    f"a folder; it is not followed"))
                continue
            path, problem = _pick_notebook(folder, notebook_name)
            submitted_at, time_problem = _read_time(folder, tz)
            digest = sha256_of(path) if path is not None and not problem else ""
            found.append(Submission(student_dir.name, assignment, path or folder, digest,
                                    submitted_at, time_problem, problem))
    return sorted(found, key=lambda s: (s.assignment, s.student))


MANIFEST_COLUMNS = ("student", "assignment", "path", "submitted_at")


def discover_manifest(manifest: Path, notebooks: dict[str, str], tz: ZoneInfo
                      ) -> list[Submission]:
    """Submissions listed in a CSV with columns ``student,assignment,path,submitted_at``.

    ``path`` is relative to the manifest's folder; ``submitted_at`` is ISO 8601 (a time
    without an offset is read in ``tz``; an empty one is recorded as unknown). A student may
    appear several times for one assignment: every row is a submission. Rows of assignments
    not in ``notebooks`` are ignored.
    """
    try:
        with manifest.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise SubmissionsError(f"{manifest}: missing column(s) {', '.join(missing)}")
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SubmissionsError(f"{manifest}: cannot read it: {exc}") from exc
    found = []
    for line, row in rows:
        student, assignment = (row["student"] or "").strip(), (row["assignment"] or "").strip()
        if assignment not in notebooks:
            continue
        if not student:
            raise SubmissionsError(f"{manifest}, line {line}: empty student id")
        path = manifest.parent / (row["path"] or "").strip()
        problem = ""
        if not (row["path"] or "").strip():
            problem = f"line {line} of the manifest names no notebook"
        elif path.is_symlink():
            problem = f"{path.name} is a symbolic link; submit the notebook file itself"
        elif not path.is_file():
            problem = f"{path} does not exist or is not a file"
        text = (row["submitted_at"] or "").strip()
        submitted_at, time_problem = None, "no submission time in the manifest"
        if text:
            try:
                submitted_at, time_problem = parse_timestamp(text, tz), ""
            except ValueError as exc:
                time_problem = f"unreadable submission time in the manifest: {exc}"
        digest = sha256_of(path) if not problem else ""
        found.append(Submission(student, assignment, path, digest, submitted_at, time_problem,
                                problem))
    return sorted(found, key=lambda s: (s.assignment, s.student,
                                        s.submitted_at.timestamp() if s.submitted_at else 0.0))
