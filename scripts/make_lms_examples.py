"""Write a Moodle download and a Canvas download of the bundled example submissions
(examples/submissions/), in the formats the two LMSs' source code writes, for trying
`grader import` and `grader export --format moodle|canvas` (README, "LMS"):

    python scripts/make_lms_examples.py                 # into out/lms-examples/
    python scripts/make_lms_examples.py --out DIR

What it writes, per homework with examples (hw1 ... hw6):

    roster.csv                                  student,name,email,lms_id (Canvas user ids)
    moodle/NNSC-Homework 1-1041.zip             "Download all submissions", folder mode
    moodle/Grades-NNSC-Homework 1-1041.csv      the offline grading worksheet
    moodle-flat/NNSC-Homework 1-1041.zip        the same download in flat-file mode
    canvas/nnsc-homework-1_submissions.zip      "Download Submissions"
    canvas/nnsc-homework-1_times.csv            user_id,submitted_at (the REST API's times)

The students have names with spaces, accents and apostrophes (and one in Cyrillic), as
downloads have them; grace has no submission time (the worksheet says "-", the times CSV
nothing), so her final stays pending. The naming rules are Moodle's
(``mod/assign/classes/downloader.php``, ``clean_filename``) and Canvas's
(``lib/content_zipper.rb``); the tests (``tests/test_lms.py``) build their own downloads with
these functions.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "submissions"
ZIP_TIME = (2026, 12, 9, 12, 0, 0)
MOODLE_COLUMNS = ["Identifier", "Full name", "Email address", "Status", "Grade", "Maximum Grade",
                  "Grade can be changed", "Last modified (submission)", "Last modified (grade)",
                  "Feedback comments"]


@dataclass(frozen=True)
class Person:
    """A student as both LMSs know them."""

    student: str  # the roster's id
    first: str
    last: str
    email: str
    canvas_id: int
    participant: int  # Moodle's participant id in the worksheet and the download

    @property
    def full_name(self) -> str:
        return f"{self.first} {self.last}"


@dataclass(frozen=True)
class Handed:
    """One submission: whose, its files (name -> bytes), when (None: unknown)."""

    person: Person
    files: dict[str, bytes]
    submitted_at: dt.datetime | None
    late: bool = False  # by Canvas's due date
    attachment_id: int = 0


PEOPLE = (
    Person("alice", "Alice", "Dupré", "alice@example.edu", 101, 5001),
    Person("bob", "Bob", "O'Brien", "bob@example.edu", 102, 5002),
    Person("carol", "Carol", "Núñez", "carol@example.edu", 103, 5003),
    Person("dave", "Dave", "van der Berg", "dave@example.edu", 104, 5004),
    Person("erin", "Érin", "Le Goff", "erin@example.edu", 105, 5005),
    Person("frank", "Frank", "Müller-Lüdenscheidt", "frank@example.edu", 106, 5006),
    Person("grace", "Grace", "Hopper", "grace@example.edu", 107, 5007),
    Person("hugo", "Hugo", "D'Arcy", "hugo@example.edu", 108, 5008),
    Person("ivan", "Иван", "Петров", "ivan@example.edu", 109, 5009),
)
NOBODY = Person("zoe", "Zoé", "Nobody", "zoe@example.edu", 110, 5010)  # on the LMS, no hand-in


# -- Moodle -----------------------------------------------------------------------------------


def moodle_clean(name: str) -> str:
    """Moodle's ``clean_filename`` (``PARAM_FILE``): control characters and &<>"`|':\\/ go."""
    return re.sub(r"[\x00-\x1f\x7f&<>\"`|':\\/]", "", name)


def moodle_prefix(person: Person) -> str:
    """``downloader.php``'s prefix: the full name, ``_`` as spaces, then the participant id."""
    return moodle_clean(f"{person.full_name.replace('_', ' ')}_{person.participant}")


def moodle_member(person: Person, filename: str, folders: bool = True) -> str:
    prefix = f"{moodle_prefix(person)}_assignsubmission_file"
    return f"{prefix}/{filename}" if folders else moodle_clean(f"{prefix}_{filename}")


def moodle_zip_name(course: str, assignment: str, cmid: int) -> str:
    return moodle_clean(f"{course}-{assignment}-{cmid}.zip")


def moodle_time(moment: dt.datetime, tz: ZoneInfo) -> str:
    """``userdate()``'s default format in English: ``Wednesday, 4 November 2026, 9:15 AM``."""
    local = moment.astimezone(tz)
    hour = local.hour % 12 or 12
    return (f"{local:%A}, {local.day} {local:%B} {local.year}, {hour}:{local:%M} "
            f"{'AM' if local.hour < 12 else 'PM'}")


def moodle_download(path: Path, handed: Iterable[Handed], folders: bool = True) -> Path:
    members = {moodle_member(h.person, name, folders): data
               for h in handed for name, data in h.files.items()}
    return write_zip(path, members)


def moodle_worksheet(path: Path, handed: Sequence[Handed], tz: ZoneInfo,
                     others: Sequence[Person] = (NOBODY,), maximum: str = "100.00") -> Path:
    rows = []
    for h in sorted(handed, key=lambda h: h.person.participant):
        rows.append([f"Participant {h.person.participant}", h.person.full_name, h.person.email,
                     "Submitted for grading", "", maximum, "Yes",
                     moodle_time(h.submitted_at, tz) if h.submitted_at else "-", "-", ""])
    rows += [[f"Participant {p.participant}", p.full_name, p.email, "No submission", "",
              maximum, "Yes", "-", "-", ""] for p in others]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MOODLE_COLUMNS)
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


# -- Canvas -----------------------------------------------------------------------------------


def canvas_name(person: Person) -> str:
    """``content_zipper.rb``: the sortable name, lower-cased, non-word characters removed."""
    sortable = f"{person.last}, {person.first}"
    sortable = re.sub(r"_(\d+)_", r"\1", sortable).lower()
    return sortable


def canvas_member(h: Handed, filename: str, index: int = 0, anonymous: str = "") -> str:
    who = None if anonymous else canvas_name(h.person)
    ident = f"anon_{anonymous}" if anonymous else str(h.person.canvas_id)
    prefix = "_".join(p for p in (who, "LATE" if h.late else None, ident) if p is not None)
    prefix = re.sub(r"[^\w]", "", prefix)
    clean_file = re.sub(r'[\x00/\\:*?"<>|]+', "_", filename)
    return f"{prefix}_{h.attachment_id + index}_{clean_file}"


def canvas_zip_name(course: str, assignment: str) -> str:
    slug = "-".join(re.sub(r"[^\w]+", " ", f"{course} {assignment}").lower().split())
    return re.sub(r"[^\w-]", "", f"{slug}_submissions") + ".zip"


def canvas_download(path: Path, handed: Iterable[Handed],
                    anonymous: dict[str, str] | None = None) -> Path:
    members = {}
    for h in handed:
        anon = (anonymous or {}).get(h.person.student, "")
        for i, (name, data) in enumerate(sorted(h.files.items())):
            members[canvas_member(h, name, i, anon)] = data
    return write_zip(path, members)


def canvas_times(path: Path, handed: Iterable[Handed]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["user_id", "submitted_at"])
    for h in handed:
        when = h.submitted_at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") \
            if h.submitted_at else ""
        writer.writerow([h.person.canvas_id, when])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


# -- both -------------------------------------------------------------------------------------


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.flag_bits |= 0x800  # UTF-8 names, as Moodle's zip writer flags them
            zf.writestr(info, data)
    return path


def roster_csv(path: Path, people: Iterable[Person]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["student", "name", "email", "lms_id"])
    writer.writerows([p.student, p.full_name, p.email, p.canvas_id] for p in people)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def _read_time(folder: Path, tz: ZoneInfo) -> dt.datetime | None:
    from grader.pipeline.discover import parse_timestamp

    stamp = folder / "timestamp.txt"
    return parse_timestamp(stamp.read_text(encoding="utf-8"), tz) if stamp.exists() else None


def example_handins(assignment: str, tz: ZoneInfo, deadline: dt.datetime) -> list[Handed]:
    """The example submissions of ``assignment``, as the LMS would hold them."""
    handed = []
    for i, person in enumerate(PEOPLE):
        folder = EXAMPLES / person.student / assignment
        notebooks = sorted(folder.glob("*.ipynb")) if folder.is_dir() else []
        if not notebooks:
            continue
        when = _read_time(folder, tz)
        handed.append(Handed(person, {n.name: n.read_bytes() for n in notebooks}, when,
                             late=when is not None and when > deadline,
                             attachment_id=9000 + 10 * i + int(assignment[2:]) * 1000))
    return handed


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "lms-examples")
    out: Path = parser.parse_args(argv).out
    from grader.course.config import load_course

    course = load_course(ROOT / "course.toml")
    roster_csv(out / "roster.csv", PEOPLE)
    for n, a in enumerate(course.assignments, start=1):
        # Canvas's due date: the 100 % deadline (the day after the lecture, 11:59)
        due = dt.datetime.combine(a.lecture_day + dt.timedelta(days=1), course.deadline_time,
                                  tzinfo=course.timezone) + dt.timedelta(minutes=1)
        handed = example_handins(a.id, course.timezone, due)
        if not handed:
            continue
        title = f"Homework {n}"
        zip_name = moodle_zip_name("NNSC", title, 1040 + n)
        moodle_download(out / "moodle" / zip_name, handed)
        moodle_download(out / "moodle-flat" / zip_name, handed, folders=False)
        moodle_worksheet(out / "moodle" / f"Grades-{zip_name.removesuffix('.zip')}.csv",
                         handed, course.timezone)
        canvas_zip = canvas_zip_name("NNSC", title)
        canvas_download(out / "canvas" / canvas_zip, handed)
        canvas_times(out / "canvas" / canvas_zip.replace("_submissions.zip", "_times.csv"),
                     handed)
        print(f"{a.id}: {len(handed)} submission(s) -> {out}/moodle/{zip_name}, "
              f"{out}/canvas/{canvas_zip}")


if __name__ == "__main__":
    main()
