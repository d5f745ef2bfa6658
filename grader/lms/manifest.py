"""Where an import puts what it took: the notebooks, and the manifest the grader grades.

``<out>/<assignment>/manifest.csv`` has the grader's columns (``student,assignment,path,
submitted_at``, as ``grader grade`` reads a manifest) and the mapping that made each row
(``lms``, ``lms_user``, ``lms_name``, ``lms_status``, ``download``, ``member``,
``time_source``, ``sha256``), so a run can be repeated and checked. Each notebook lies in
``files/<student>/<first 16 hex digits of its sha256>/`` with the other files of its submission.

A later import of the same homework adds its rows: a student's resubmission (another notebook)
is a row beside the first, and the course's ``counted`` rule (the latest, by default) picks the
one that counts; the same notebook downloaded again replaces its row. Everything is unpacked
into a temporary folder first and moved into place only when every member was read, and the
manifest is written to a temporary name and renamed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from grader.errors import LmsError
from grader.lms import archive
from grader.lms.intake import Handin, Intake, safe_name
from grader.output.files import write_text_atomic
from grader.pipeline.discover import MANIFEST_COLUMNS
from grader.text import LINE_CHARS, csv_cell, one_line

COLUMNS = (*MANIFEST_COLUMNS, "lms", "lms_user", "lms_name", "lms_status", "download", "member",
           "time_source", "sha256")
MANIFEST = "manifest.csv"
FILES = "files"


@dataclass(frozen=True)
class Stored:
    """What ``store`` wrote: the manifest, and how many rows are new, replaced or kept."""

    manifest: Path
    added: int
    replaced: int
    kept: int


def manifest_path(out_dir: Path, assignment: str) -> Path:
    return out_dir / safe_name(assignment) / MANIFEST


def read_manifest(path: Path) -> list[dict[str, str]]:
    """The rows of an earlier import's manifest (none when there is none)."""
    if not path.exists():
        return []
    try:
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != COLUMNS:
                raise LmsError(str(path), [f"not a manifest of grader import (columns "
                                           f"{','.join(COLUMNS)}); move it away"])
            return [dict(row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LmsError(str(path), [f"cannot read it: {exc}"]) from None


def store(intake: Intake, out_dir: Path) -> Stored:
    """Unpack ``intake``'s files under ``out_dir/<assignment>/`` and add its rows to the
    manifest there."""
    path = manifest_path(out_dir, intake.assignment)
    earlier = read_manifest(path)  # a foreign file stops the import before anything is written
    home = path.parent
    home.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=home))
    try:
        rows = [_unpack(intake, handin, staging) for handin in intake.handins]
        for row in rows:  # every member read: move the folders into place
            folder = Path(row["path"]).parent
            target = home / folder
            if target.exists():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / folder, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    new = {(r["student"], r["sha256"]): r for r in rows}
    kept = [r for r in earlier if (r["student"], r["sha256"]) not in new]
    merged = sorted(kept + rows, key=lambda r: (r["student"], r["submitted_at"], r["path"]))
    write_text_atomic(path, _csv(merged))
    replaced = len(earlier) - len(kept)
    return Stored(path, len(rows) - replaced, replaced, len(kept))


def _unpack(intake: Intake, handin: Handin, staging: Path) -> dict[str, str]:
    contents = {u.member.name: archive.read(intake.download, u.member) for u in handin.uploads}
    digest = hashlib.sha256(contents[handin.notebook.member.name]).hexdigest()
    folder = Path(FILES) / safe_name(handin.student) / digest[:16]
    (staging / folder).mkdir(parents=True)
    for upload in handin.uploads:
        (staging / folder / safe_name(upload.filename)).write_bytes(contents[upload.member.name])
    when = handin.submitted_at.isoformat() if handin.submitted_at is not None else ""
    return {"student": handin.student, "assignment": handin.assignment,
            "path": (folder / safe_name(handin.notebook.filename)).as_posix(),
            "submitted_at": when, "lms": intake.lms, "lms_user": handin.lms_user,
            "lms_name": handin.lms_name, "lms_status": handin.lms_status,
            "download": intake.download.name, "member": handin.notebook.member.name,
            "time_source": handin.time_source, "sha256": digest}


def _csv(rows: list[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: csv_cell(one_line(v, LINE_CHARS)) if k in _FROM_THE_LMS else v
                       for k, v in row.items()} for row in rows])
    return buffer.getvalue()


# what a student or the LMS named: a spreadsheet opening the manifest must not run it
_FROM_THE_LMS = ("lms_name", "lms_status", "download", "member")

