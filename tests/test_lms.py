"""grader/lms: an LMS's download in, grades and feedback out (`grader import`, `grader export
--format moodle|canvas`, `grader push canvas`).

The downloads are built here in the formats Moodle's and Canvas's source code writes
(scripts/make_lms_examples.py holds those rules: Moodle's downloader.php and clean_filename,
Canvas's content_zipper.rb); Canvas's REST API is a stand-in served on 127.0.0.1
(tests/canvas_standin.py) that records every request. No real LMS is reached. The grading round
trip grades the tiny homework of docs/checks.md ("A whole homework in four files"), as
tests/test_audit.py does, so that it stays fast.
"""

from __future__ import annotations

import csv
import datetime as dt
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from canvas_standin import TOKEN, CanvasStandIn, State
from click.testing import CliRunner
from conftest import REPO
from rows import make_row
from test_audit import TINY_HIDDEN, TINY_REFERENCE

from grader.cli.main import main
from grader.course.config import Course, load_course, load_roster
from grader.errors import ConfigError, LmsError
from grader.lms import canvas, export, manifest, moodle
from grader.lms.canvas_api import fetch_times, plan_push
from grader.lms.people import People
from grader.pipeline.discover import discover_manifest
from grader.pipeline.store import locked
from grader.records import CheckResult, Outcome
from scripts import make_lms_examples as lms
from scripts.make_lms_examples import PEOPLE, Handed

MSK = ZoneInfo("Europe/Moscow")
ALICE, BOB, CAROL, DAVE, ERIN, FRANK, GRACE, HUGO, IVAN = PEOPLE

COURSE = """
[course]
name = "Tiny course"
timezone = "Europe/Moscow"
last_lecture_day = 2026-12-08
roster = "roster.csv"

[limits]
cell_timeout_s = 10
notebook_timeout_s = 60

[[assignment]]
id = "hw1"
title = "Measures"
lecture_day = 2026-11-03
notebook = "hw1.ipynb"

[lms]
canvas_url = "https://canvas.example.edu"
canvas_course = 1234

[lms.canvas_assignments]
hw1 = { id = 5678, points = 10 }
"""

WRONG = TINY_REFERENCE.replace("return 2 * macs", "return macs")  # FLOPs counted as MACs


def _notebook(source: str) -> bytes:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells.append(nbformat.v4.new_code_cell(source, id="the-cell"))  # the same bytes each time
    return nbformat.writes(nb).encode("utf-8")


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, minute, tzinfo=MSK)


def handins() -> list[Handed]:
    """alice on time and right; bob on time and wrong; dave a day late and right (cap 75 %);
    grace right, with no time; ivan (Cyrillic name) on time and right."""
    right, wrong = _notebook(TINY_REFERENCE), _notebook(WRONG)
    return [Handed(ALICE, {"hw1.ipynb": right}, at(4, 9, 15), attachment_id=9001),
            Handed(BOB, {"hw1.ipynb": wrong}, at(4, 11, 59), attachment_id=9002),
            Handed(DAVE, {"hw1.ipynb": right}, at(5, 10), late=True, attachment_id=9004),
            Handed(GRACE, {"hw1.ipynb": right}, None, attachment_id=9007),
            Handed(IVAN, {"hw1 (final).ipynb": right}, at(4, 10, 45), attachment_id=9009)]


@pytest.fixture
def course(tmp_path: Path) -> Course:
    root = tmp_path / "course"
    (root / "solutions" / "hw1" / "checks").mkdir(parents=True)
    (root / "solutions" / "hw1" / "checks" / "test_hw1.py").write_text(TINY_HIDDEN)
    (root / "course.toml").write_text(COURSE)
    lms.roster_csv(root / "roster.csv", PEOPLE)
    return load_course(root / "course.toml")


@pytest.fixture
def people(course: Course) -> People:
    return People(course.roster, "roster")


def moodle_files(folder: Path, handed: list[Handed], folders: bool = True,
                 cmid: int = 42) -> tuple[Path, Path]:
    zip_path = lms.moodle_download(folder / lms.moodle_zip_name("NNSC", "Homework 1", cmid),
                                   handed, folders)
    sheet = lms.moodle_worksheet(folder / f"Grades-NNSC-Homework 1-{cmid}.csv", handed, MSK)
    return zip_path, sheet


def canvas_files(folder: Path, handed: list[Handed]) -> tuple[Path, Path]:
    zip_path = lms.canvas_download(folder / lms.canvas_zip_name("NNSC", "Homework 1"), handed)
    return zip_path, lms.canvas_times(folder / "times.csv", handed)


def invoke(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


# -- in: Moodle ---------------------------------------------------------------------------------


@pytest.mark.parametrize("folders", [True, False], ids=["folders", "flat files"])
def test_a_moodle_download_maps_every_file_to_the_roster_with_its_time(
        tmp_path: Path, people: People, folders: bool) -> None:
    zip_path, sheet = moodle_files(tmp_path, handins(), folders)
    intake = moodle.read_download(people, zip_path, sheet, "hw1", MSK)
    found = {h.student: h for h in intake.handins}
    assert sorted(found) == ["alice", "bob", "dave", "grace", "ivan"]
    assert found["alice"].submitted_at == at(4, 9, 15)
    assert found["alice"].submitted_at.utcoffset() == dt.timedelta(hours=3)
    assert found["bob"].lms_name == "Bob O'Brien" and found["bob"].lms_user == "5002"
    assert found["ivan"].notebook.filename == "hw1 (final).ipynb"
    assert found["grace"].submitted_at is None  # "-": unknown, never on time
    assert "Europe/Moscow" in found["alice"].time_source
    assert intake.unknown_times == 1


def test_moodle_times_are_read_as_its_worksheet_writes_them() -> None:
    assert moodle.parse_time("Wednesday, 4 November 2026, 9:15 AM", MSK) == at(4, 9, 15)
    assert moodle.parse_time("Thursday, 5 November 2026, 12:05 PM", MSK) == at(5, 12, 5)
    assert moodle.parse_time("Thursday, 5 November 2026, 12:05 AM", MSK) == at(5, 0, 5)
    assert moodle.parse_time("2026-11-04T09:15:00+03:00", MSK) == at(4, 9, 15)
    assert moodle.parse_time("-", MSK) is None
    with pytest.raises(ValueError):
        moodle.parse_time("среда, 4 ноября 2026, 09:15", MSK)


def test_an_import_writes_the_notebooks_and_a_manifest_the_grader_reads(
        tmp_path: Path, course: Course, people: People) -> None:
    zip_path, sheet = moodle_files(tmp_path, handins())
    stored = manifest.store(moodle.read_download(people, zip_path, sheet, "hw1", MSK),
                            tmp_path / "out")
    subs = {s.student: s for s in discover_manifest(stored.manifest, {"hw1": "hw1.ipynb"}, MSK)}
    assert sorted(subs) == ["alice", "bob", "dave", "grace", "ivan"]
    assert subs["alice"].path.read_bytes() == _notebook(TINY_REFERENCE)
    assert subs["dave"].submitted_at == at(5, 10) and subs["grace"].submitted_at is None
    assert all(not s.problem for s in subs.values())
    with stored.manifest.open(encoding="utf-8") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    assert rows["bob"]["lms"] == "moodle" and rows["bob"]["lms_user"] == "5002"
    assert rows["alice"]["member"] == "Alice Dupré_5001_assignsubmission_file/hw1.ipynb"


def test_a_resubmission_is_a_row_beside_the_first_and_the_same_file_again_replaces_it(
        tmp_path: Path, people: People) -> None:
    first = handins()
    zip_path, sheet = moodle_files(tmp_path / "first", first)
    manifest.store(moodle.read_download(people, zip_path, sheet, "hw1", MSK), tmp_path / "out")
    again = [replace(first[1], files={"hw1.ipynb": _notebook(TINY_REFERENCE + "\n# fixed")},
                     submitted_at=at(4, 11, 30)), first[0]]
    zip_path, sheet = moodle_files(tmp_path / "second", again)
    stored = manifest.store(moodle.read_download(people, zip_path, sheet, "hw1", MSK),
                            tmp_path / "out")
    assert (stored.added, stored.replaced, stored.kept) == (1, 1, 4)
    rows = discover_manifest(stored.manifest, {"hw1": "hw1.ipynb"}, MSK)
    bobs = [r for r in rows if r.student == "bob"]
    assert len(bobs) == 2 and bobs[0].sha256 != bobs[1].sha256  # both kept; "latest" counts


# -- in: Canvas ---------------------------------------------------------------------------------


def test_a_canvas_download_with_late_and_anonymous_files(tmp_path: Path, people: People) -> None:
    handed = handins()
    zip_path = lms.canvas_download(tmp_path / "c.zip", handed, anonymous={"grace": "Xy9Q2"})
    names = zipfile.ZipFile(zip_path).namelist()
    assert "vanderbergdave_LATE_104_9004_hw1.ipynb" in names
    assert "anon_Xy9Q2_9007_hw1.ipynb" in names and "obrienbob_102_9002_hw1.ipynb" in names
    times = tmp_path / "times.csv"
    times.write_text("user_id,submitted_at,anonymous_id\n101,2026-11-04T06:15:00Z,\n"
                     "102,2026-11-04 11:59,\n104,2026-11-05T07:00:00Z,\n107,,Xy9Q2\n"
                     "109,2026-11-04T07:45:00Z,\n")
    intake = canvas.read_download(people, zip_path, "hw1", canvas.read_times(times, MSK))
    found = {h.student: h for h in intake.handins}
    assert found["alice"].submitted_at == at(4, 9, 15)
    assert found["bob"].submitted_at == at(4, 11, 59)  # no offset: read in the zone stated
    assert found["grace"].lms_user == "107" and found["grace"].submitted_at is None
    assert found["dave"].lms_status == "late by Canvas's due date"
    assert found["ivan"].lms_name == "петровиван"


def test_without_times_every_canvas_time_is_unknown(tmp_path: Path, people: People) -> None:
    zip_path, _ = canvas_files(tmp_path, handins())
    intake = canvas.read_download(people, zip_path, "hw1", canvas.NO_TIMES)
    assert intake.unknown_times == len(intake.handins) == 5


def test_an_anonymous_file_with_no_key_is_refused(tmp_path: Path, people: People) -> None:
    zip_path = lms.canvas_download(tmp_path / "c.zip", handins(), anonymous={"bob": "Ab12C"})
    with pytest.raises(LmsError, match="anon_Ab12C_9002_hw1.ipynb.*anonymous grading"):
        canvas.read_download(people, zip_path, "hw1", canvas.NO_TIMES)


# -- bad input: refused, named, nothing stored ----------------------------------------------------


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _bad_moodle(tmp_path: Path, case: str) -> tuple[Path, Path, str]:
    handed = handins()
    zip_path, sheet = moodle_files(tmp_path, handed)
    members = {n: zipfile.ZipFile(zip_path).read(n) for n in zipfile.ZipFile(zip_path).namelist()}
    if case == "zip slip":
        members["../../evil_5001_assignsubmission_file/x.ipynb"] = b"{}"
        return _zip(zip_path, members), sheet, "../../evil_5001_assignsubmission_file/x.ipynb"
    if case == "unknown student":
        stranger = replace(NOBODY_ON_ROSTER, participant=5099)
        extra = Handed(stranger, {"hw1.ipynb": b"{}"}, at(4, 9))
        lms.moodle_download(zip_path, [*handed, extra])
        lms.moodle_worksheet(sheet, [*handed, extra], MSK)
        return zip_path, sheet, "Nina Stranger_5099_assignsubmission_file/hw1.ipynb"
    if case == "two notebooks":
        two = replace(handed[0], files={"hw1.ipynb": b"{}", "hw1 (1).ipynb": b"{}"})
        lms.moodle_download(zip_path, [two, *handed[1:]])
        return zip_path, sheet, "hw1 (1).ipynb"
    if case == "a name that does not parse":
        members["notes from the teacher.txt"] = b"hi"
        return _zip(zip_path, members), sheet, "notes from the teacher.txt"
    if case == "worksheet of another assignment":
        other = tmp_path / "Grades-NNSC-Homework 2-43.csv"
        shutil.copy(sheet, other)
        return zip_path, other, "course module is 43"
    if case == "worksheet without the participant":
        lms.moodle_worksheet(sheet, handed[1:], MSK)
        return zip_path, sheet, "participant 5001 is not in the worksheet"
    if case == "a time that does not parse":
        text = sheet.read_text().replace("Wednesday, 4 November 2026, 9:15 AM", "4/11/26 9:15")
        sheet.write_text(text)
        return zip_path, sheet, "'4/11/26 9:15' does not parse"
    if case == "a symbolic link":
        with zipfile.ZipFile(zip_path, "a") as zf:
            info = zipfile.ZipInfo("Alice Dupré_5001_assignsubmission_file/link.ipynb")
            info.external_attr = 0o120777 << 16
            zf.writestr(info, "/etc/passwd")
        return zip_path, sheet, "a symbolic link"
    raise AssertionError(case)


NOBODY_ON_ROSTER = lms.Person("nina", "Nina", "Stranger", "nina@elsewhere.edu", 199, 5099)
BAD_CASES = ["zip slip", "unknown student", "two notebooks", "a name that does not parse",
             "worksheet of another assignment", "worksheet without the participant",
             "a time that does not parse", "a symbolic link"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_moodle_input_is_refused_by_name_and_nothing_is_stored(
        tmp_path: Path, course: Course, case: str) -> None:
    zip_path, sheet, named = _bad_moodle(tmp_path, case)
    out = tmp_path / "out"
    code, output = invoke("import", "moodle", zip_path, "--worksheet", sheet, "-a", "hw1",
                          "--course", course.path, "--out", out, "--gradebook",
                          tmp_path / "g.sqlite")
    assert code == 2, output
    assert named in output and "nothing was written" in output
    assert not out.exists() and not (tmp_path / "g.sqlite").exists()


def test_bad_input_leaves_an_earlier_import_as_it_was(tmp_path: Path, course: Course) -> None:
    zip_path, sheet = moodle_files(tmp_path / "good", handins())
    out = tmp_path / "out"
    code, _ = invoke("import", "moodle", zip_path, "--worksheet", sheet, "-a", "hw1",
                     "--course", course.path, "--out", out, "--import-only")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad_zip, bad_sheet, _ = _bad_moodle(tmp_path / "bad", "zip slip")
    code, _ = invoke("import", "moodle", bad_zip, "--worksheet", bad_sheet, "-a", "hw1",
                     "--course", course.path, "--out", out, "--import-only")
    assert code == 2
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("case, named", [
    ("unknown user", "199_9099_hw1.ipynb"),
    ("no such name", "hw1.ipynb"),
    ("times of another assignment", "names none of the download's students"),
])
def test_bad_canvas_input_is_refused_by_name(tmp_path: Path, people: People, case: str,
                                            named: str) -> None:
    handed = handins()
    zip_path, times_path = canvas_files(tmp_path, handed)
    times = canvas.read_times(times_path, MSK)
    if case == "unknown user":
        lms.canvas_download(zip_path, [*handed, Handed(NOBODY_ON_ROSTER, {"hw1.ipynb": b"{}"},
                                                       None, attachment_id=9099)])
    elif case == "no such name":
        _zip(zip_path, {"hw1.ipynb": b"{}"})
    else:
        times_path.write_text("user_id,submitted_at\n1,2026-11-04T06:15:00Z\n")
        times = canvas.read_times(times_path, MSK)
    with pytest.raises(LmsError) as info:
        canvas.read_download(people, zip_path, "hw1", times)
    assert named in str(info.value)


def test_a_user_listed_twice_in_the_times_gets_the_latest(tmp_path: Path) -> None:
    times = tmp_path / "times.csv"
    times.write_text("user_id,submitted_at\n101,2026-11-04T06:15:00Z\n101,2026-11-05T06:15:00Z\n"
                     "101,2026-11-03T06:15:00Z\n101,\n")
    assert canvas.read_times(times, MSK).by_user["101"].submitted_at == at(5, 9, 15)


def test_a_long_name_is_bounded_in_the_error(tmp_path: Path, people: People) -> None:
    long_name = "x" * 5000 + ".txt"
    zip_path = _zip(tmp_path / "c.zip", {long_name: b"x"})
    with pytest.raises(LmsError) as info:
        canvas.read_download(people, zip_path, "hw1", canvas.NO_TIMES)
    assert len(str(info.value)) < 600 and "…" in str(info.value)


def test_a_name_a_spreadsheet_would_run_is_neutralised_in_the_manifest(
        tmp_path: Path, people: People) -> None:
    sneaky = replace(ALICE, first="=HYPERLINK(1)", last="")
    handed = [replace(handins()[0], person=sneaky)]
    zip_path, sheet = moodle_files(tmp_path, handed)
    stored = manifest.store(moodle.read_download(people, zip_path, sheet, "hw1", MSK),
                            tmp_path / "out")
    _, rows = _read_csv(stored.manifest)
    assert rows[0]["lms_name"].startswith("'=HYPERLINK") and rows[0]["student"] == "alice"


def test_an_import_needs_a_roster(tmp_path: Path, course: Course) -> None:
    bare = replace(course, roster=())
    with pytest.raises(LmsError, match="no roster"):
        People(bare.roster, str(bare.path))


def test_the_roster_refuses_an_lms_id_given_twice(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("student,name,email,lms_id\na,,,7\nb,,,7\n")
    with pytest.raises(ConfigError, match="lms_id '7' of 'b' is also 'a'"):
        load_roster(tmp_path / "r.csv")


def test_lms_settings_are_checked(tmp_path: Path) -> None:
    (tmp_path / "course.toml").write_text(COURSE.replace('roster = "roster.csv"\n', "")
                                          .replace("hw1 = {", "hw9 = {"))
    with pytest.raises(ConfigError, match="no assignment 'hw9'"):
        load_course(tmp_path / "course.toml")


# -- out: Moodle's worksheet and feedback zip, Canvas's gradebook CSV -----------------------------


def _rows() -> list:
    message = CheckResult("test_hw1::test_flops", 1.0, Outcome.FAILED,
                          "<script>alert(1)</script> two FLOPs per MAC", "FLOPs = 2 x MACs")
    return [make_row("alice", raw=100.0, cap=100.0, final=100.0),
            make_row("bob", raw=50.0, cap=100.0, final=50.0, checks=(message,)),
            make_row("dave", raw=100.0, cap=75.0, final=75.0,
                     submitted_at="2026-11-05T10:00:00+03:00"),
            make_row("grace", submitted_at=None, cap=None, final=None, raw=100.0)]


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def test_the_moodle_worksheet_is_filled_in_as_moodle_reads_it(
        tmp_path: Path, course: Course, people: People) -> None:
    _, sheet = moodle_files(tmp_path, handins())
    done = export.moodle_export(course, _rows(), people, sheet, "hw1", tmp_path / "out")
    assert (done.graded, done.pending) == (3, 1)
    columns, rows = _read_csv(done.files[0])
    assert columns == lms.MOODLE_COLUMNS  # every column kept, in Moodle's order
    by_id = {r["Identifier"]: r for r in rows}
    assert by_id["Participant 5001"]["Grade"] == "100.00"
    assert by_id["Participant 5002"]["Grade"] == "50.00"
    assert by_id["Participant 5004"]["Grade"] == "75.00"  # after the late rule
    assert by_id["Participant 5007"]["Grade"] == ""  # pending: blank, never 0
    assert by_id["Participant 5010"] == {**by_id["Participant 5010"], "Grade": ""}
    bob = by_id["Participant 5002"]["Feedback comments"]
    assert "&lt;script&gt;" in bob and "<script>" not in bob and bob.startswith("<h1>")
    assert all(r["Last modified (grade)"] == "-" for r in rows)  # as downloaded


def test_a_worksheet_of_another_assignment_is_refused_on_export(
        tmp_path: Path, course: Course, people: People) -> None:
    zip_path, sheet = moodle_files(tmp_path / "in", handins(), cmid=42)
    manifest.store(moodle.read_download(people, zip_path, sheet, "hw1", MSK), tmp_path / "out")
    _, other = moodle_files(tmp_path / "other", handins(), cmid=43)
    with pytest.raises(LmsError, match="course module is 43, hw1's downloads were of 42"):
        export.moodle_export(course, _rows(), people, other, "hw1", tmp_path / "out")
    assert not (tmp_path / "out" / "hw1-moodle-worksheet.csv").exists()


def test_the_feedback_zip_is_named_as_moodle_imports_it(
        tmp_path: Path, course: Course, people: People) -> None:
    _, sheet = moodle_files(tmp_path, handins())
    done = export.moodle_export(course, _rows(), people, sheet, "hw1", tmp_path / "out")
    names = zipfile.ZipFile(done.files[1]).namelist()
    assert "Bob OBrien_5002_assignfeedback_file/hw1-feedback.html" in names
    for name in names:  # importziplib.php: explode('_', $part, 5) -> fullname, id, type, plugin
        info = name.split("/")[0].split("_", 4)
        assert len(info) >= 4 and info[1].isdigit() and info[2:4] == ["assignfeedback", "file"]
    assert len(names) == 3  # grace's final is pending: no feedback file yet
    html = zipfile.ZipFile(done.files[1]).read(
        "Bob OBrien_5002_assignfeedback_file/hw1-feedback.html").decode()
    assert "<html" in html.lower() and "&lt;script&gt;" in html and "<script>" not in html


def test_the_canvas_gradebook_has_only_the_graded_assignments_columns(
        tmp_path: Path, course: Course, people: People) -> None:
    done = export.canvas_export(course, _rows(), people, ["hw1"], tmp_path / "gb.csv")
    columns, rows = _read_csv(done.files[0])
    assert columns == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section",
                       "Measures (5678)"]
    by_id = {r["ID"]: r["Measures (5678)"] for r in rows}
    assert by_id == {"101": "10.00", "102": "5.00", "104": "7.50", "107": ""}
    assert (done.graded, done.pending) == (3, 1)


def test_a_canvas_export_names_what_it_lacks(tmp_path: Path, course: Course) -> None:
    unmapped = replace(course, lms=replace(course.lms, canvas_assignments={}))
    with pytest.raises(LmsError, match=r"hw1: no Canvas assignment"):
        export.canvas_assignments(unmapped, _rows())
    without_ids = People([replace(p, lms_id="") for p in course.roster], "roster")
    with pytest.raises(LmsError, match="alice: no lms_id"):
        export.canvas_export(course, _rows(), without_ids, ["hw1"], tmp_path / "gb.csv")
    assert not (tmp_path / "gb.csv").exists()


# -- Canvas's REST API: the stand-in ------------------------------------------------------------


@pytest.fixture(scope="module")
def standin() -> Iterator[CanvasStandIn]:
    server = CanvasStandIn()
    yield server
    server.close()


def _state(scores: dict[int, float | None]) -> State:
    state = State()
    state.assignments[5678] = {"id": 5678, "course_id": 1234, "name": "Measures",
                               "points_possible": 10.0}
    state.submissions[5678] = {
        str(uid): {"id": uid * 10, "user_id": uid, "assignment_id": 5678, "score": score,
                   "submitted_at": "2026-11-04T06:15:00Z", "late": uid == 104,
                   "attachments": [{"id": 9000 + uid % 100, "filename": "hw1.ipynb"}],
                   "submission_history": [
                       {"attempt": 1, "submitted_at": "2026-11-03T17:00:00Z",
                        "attachments": [{"id": 8000 + uid % 100}]},
                       {"attempt": 2, "submitted_at": "2026-11-04T06:15:00Z",
                        "attachments": [{"id": 9000 + uid % 100}]}],
                   "user": {"id": uid, "email": f"user{uid}@example.edu"}}
        for uid, score in scores.items()}
    return state


def test_canvas_times_come_from_the_api_by_attachment(standin: CanvasStandIn,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANVAS_API_TOKEN", TOKEN)
    standin.reset(_state({101: None, 102: None, 104: None}))
    times = fetch_times(standin.url, 1234, 5678)
    assert times.by_user["101"].attachment_times == {
        "8001": dt.datetime(2026, 11, 3, 17, tzinfo=dt.UTC),
        "9001": dt.datetime(2026, 11, 4, 6, 15, tzinfo=dt.UTC)}
    assert times.by_user["104"].late and set(times.by_user) == {"101", "102", "104"}
    gets = [r for r in standin.state.requests if r.path.endswith("/submissions")]
    assert len(gets) == 2  # two pages, the second from the Link header
    assert gets[0].query["include[]"] == ["submission_history", "user"]


def test_the_token_never_travels_to_another_machine_in_clear(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANVAS_API_TOKEN", TOKEN)
    with pytest.raises(LmsError, match="travel in clear"):
        fetch_times("http://canvas.example.edu", 1, 2)
    monkeypatch.delenv("CANVAS_API_TOKEN")
    with pytest.raises(LmsError, match="CANVAS_API_TOKEN"):
        fetch_times("https://canvas.example.edu", 1, 2)


def _gradebook(path: Path) -> Path:
    with locked(path) as book:
        for row in _rows():
            book.put(row)
    return path


def _push(standin: CanvasStandIn, course: Course, gradebook: Path, *more: str) -> tuple[int, str]:
    return invoke("push", "canvas", "--course", course.path, "--gradebook", gradebook,
                  "--canvas", standin.url, *more)


def test_push_dry_run_shows_the_changes_and_posts_nothing(
        standin: CanvasStandIn, course: Course, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANVAS_API_TOKEN", TOKEN)
    standin.reset(_state({101: 10.0, 102: 4.0, 104: None, 107: None}))
    code, output = _push(standin, course, _gradebook(tmp_path / "g.sqlite"))
    assert code == 0, output
    assert "2 to post, 1 already equal" in output and "1 final(s) pending" in output
    assert "bob" in output and "dave" in output and not standin.state.puts()


def test_push_posts_exactly_the_changes_the_dry_run_showed(
        standin: CanvasStandIn, course: Course, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANVAS_API_TOKEN", TOKEN)
    standin.reset(_state({101: 10.0, 102: 4.0, 104: None, 107: None}))
    rows = _rows()
    plan = plan_push(course, rows, People(course.roster, "r"), ["hw1"], standin.url, 1234).plan
    shown = {(c.user_id, c.new) for c in plan.changes}
    code, output = _push(standin, course, _gradebook(tmp_path / "g.sqlite"), "--post")
    assert code == 0, output
    puts = standin.state.puts()
    posted = {(r.path.rsplit("/", 1)[1], float(r.form["submission[posted_grade]"][0]))
              for r in puts}
    assert posted == shown == {("102", 5.0), ("104", 7.5)}
    bob = next(r for r in puts if r.path.endswith("/102"))
    assert bob.form["comment[text_comment]"][0].startswith("# Measures (hw1): feedback for bob")
    assert "107" not in {r.path.rsplit("/", 1)[1] for r in puts}  # pending: never posted
    code, output = _push(standin, course, tmp_path / "g.sqlite", "--post")
    assert code == 0 and "posted 0 grade(s)" in output, output
    assert len(standin.state.puts()) == 2  # a second push finds nothing left to post


def test_a_push_stopped_half_way_posts_only_what_is_left(
        standin: CanvasStandIn, course: Course, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANVAS_API_TOKEN", TOKEN)
    state = _state({101: None, 102: None, 104: None, 107: None})
    state.fail_after = 1  # Canvas stops answering after the first grade
    standin.reset(state)
    gradebook = _gradebook(tmp_path / "g.sqlite")
    code, output = _push(standin, course, gradebook, "--post")
    assert code == 2 and "run the push again" in output
    assert [r.path.rsplit("/", 1)[1] for r in standin.state.puts()] == ["101", "102"]
    state.fail_after = None
    state.requests.clear()
    code, output = _push(standin, course, gradebook, "--post")
    assert code == 0, output
    assert [r.path.rsplit("/", 1)[1] for r in standin.state.puts()] == ["102", "104"]
    assert {u: s["score"] for u, s in state.submissions[5678].items()} == {
        "101": 10.0, "102": 5.0, "104": 7.5, "107": None}


def test_a_wrong_token_is_a_clear_error(standin: CanvasStandIn, course: Course, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANVAS_API_TOKEN", "wrong")
    standin.reset(_state({101: None}))
    code, output = _push(standin, course, _gradebook(tmp_path / "g.sqlite"))
    assert code == 2 and "Canvas refused" in output


# -- the round trip: download -> import -> grade -> export ----------------------------------------


@pytest.mark.kernel
def test_import_grade_export_round_trip(tmp_path: Path, course: Course) -> None:
    handed = handins()
    book, out = tmp_path / "g.sqlite", tmp_path / "lms"
    common = ["--course", course.path, "--gradebook", book, "--out", out, "--jobs", "1",
              "--csv", tmp_path / "gradebook.csv", "--feedback", tmp_path / "feedback"]
    zip_path, sheet = moodle_files(tmp_path / "moodle", handed)
    code, output = invoke("import", "moodle", zip_path, "--worksheet", sheet, "-a", "hw1",
                          *common)
    assert code == 0, output
    canvas_zip, times = canvas_files(tmp_path / "canvas", handed)
    code, output = invoke("import", "canvas", canvas_zip, "--times", times, "-a", "hw1", *common)
    assert code == 0 and "(unchanged, kept)" in output, output  # the same notebooks
    code, output = invoke("export", "--format", "moodle", "-a", "hw1", "--worksheet", sheet,
                          "--course", course.path, "--gradebook", book, "--out", out)
    assert code == 0 and "1 final(s) pending" in output, output
    columns, rows = _read_csv(out / "hw1-moodle-worksheet.csv")
    assert columns[:10] == lms.MOODLE_COLUMNS
    grades = {r["Full name"]: r["Grade"] for r in rows}
    assert grades == {"Alice Dupré": "100.00", "Bob O'Brien": "50.00",
                      "Dave van der Berg": "75.00", "Grace Hopper": "", "Иван Петров": "100.00",
                      "Zoé Nobody": ""}
    code, output = invoke("export", "--format", "canvas", "--course", course.path,
                          "--gradebook", book, "--out", out)
    assert code == 0, output
    columns, rows = _read_csv(out / "canvas-gradebook.csv")
    assert columns == [*export.CANVAS_STUDENT_COLUMNS, "Measures (5678)"]
    assert {r["ID"]: r["Measures (5678)"] for r in rows} == {
        "101": "10.00", "102": "5.00", "104": "7.50", "107": "", "109": "10.00"}


def test_the_examples_script_writes_downloads_the_import_reads(tmp_path: Path) -> None:
    lms.main(["--out", str(tmp_path / "ex")])
    course = load_course(REPO / "course.toml")
    people = People(load_roster(tmp_path / "ex" / "roster.csv"), "roster")
    zip_name = "NNSC-Homework 1-1041.zip"
    for folder in ("moodle", "moodle-flat"):
        sheet = tmp_path / "ex" / "moodle" / "Grades-NNSC-Homework 1-1041.csv"
        intake = moodle.read_download(people, tmp_path / "ex" / folder / zip_name, sheet, "hw1",
                                      course.timezone)
        assert len(intake.handins) == 9 and intake.unknown_times == 1
    intake = canvas.read_download(
        people, tmp_path / "ex" / "canvas" / "nnsc-homework-1_submissions.zip", "hw1",
        canvas.read_times(tmp_path / "ex" / "canvas" / "nnsc-homework-1_times.csv", MSK))
    found = {h.student: h for h in intake.handins}
    assert len(found) == 9 and found["grace"].submitted_at is None
    stamp = (REPO / "examples/submissions/dave/hw1/timestamp.txt").read_text()
    assert found["dave"].submitted_at is not None
    assert found["dave"].submitted_at.astimezone(MSK).strftime("%Y-%m-%d %H:%M") in stamp


def test_the_import_commands_explain_themselves() -> None:
    for args in (["import", "moodle"], ["import", "canvas"], ["push", "canvas"]):
        code, output = invoke(*args, "--help")
        assert code == 0 and f"Example: grader {' '.join(args)}" in " ".join(output.split())
