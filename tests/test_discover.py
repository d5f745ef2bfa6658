"""Tests for grader/pipeline/discover.py: timestamp parsing, and discovering submissions in an
nbgrader layout ``<root>/<student>/<assignment>/*.ipynb`` built in tmp_path."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from grader.errors import SubmissionsError
from grader.pipeline.discover import discover, parse_timestamp
from grader.records import Submission

MSK = ZoneInfo("Europe/Moscow")  # UTC+3 all year
BER = ZoneInfo("Europe/Berlin")
NOTEBOOKS = {"hw1": "hw1.ipynb", "hw2": "hw2.ipynb"}
STAMP = "2026-11-04 11:58:00.123456 Europe/Moscow"
STAMP_AT = dt.datetime(2026, 11, 4, 11, 58, 0, 123456, tzinfo=MSK)


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


# -- parse_timestamp ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tz", "instant", "offset_h"),
    [
        pytest.param("2026-03-03 11:58:00.123456 Europe/Moscow", BER,
                     utc(2026, 3, 3, 8, 58, 0, 123456), 3, id="nbgrader-zone-name"),
        pytest.param("2026-03-03T11:58:00+03:00", BER, utc(2026, 3, 3, 8, 58), 3,
                     id="iso-offset"),
        pytest.param("2026-03-03T11:58:00-05:30", MSK, utc(2026, 3, 3, 17, 28), -5.5,
                     id="iso-negative-offset"),
        pytest.param("2026-03-03T08:58:00Z", MSK, utc(2026, 3, 3, 8, 58), 0, id="iso-Z"),
        pytest.param("2026-03-03 08:58:00.5Z", MSK, utc(2026, 3, 3, 8, 58, 0, 500000), 0,
                     id="space-fraction-Z"),
        pytest.param("2026-03-03 11:58:00", MSK, utc(2026, 3, 3, 8, 58), 3,
                     id="naive-course-tz-msk"),
        pytest.param("2026-03-03 11:58:00", BER, utc(2026, 3, 3, 10, 58), 1,
                     id="naive-course-tz-berlin"),
        pytest.param("2026-07-03 11:58:00", BER, utc(2026, 7, 3, 9, 58), 2,
                     id="naive-course-tz-berlin-summer"),
        pytest.param("2026-03-03 08:58:00 UTC", MSK, utc(2026, 3, 3, 8, 58), 0, id="UTC-name"),
        pytest.param("2026-03-03 11:58:00 America/Argentina/Buenos_Aires", MSK,
                     utc(2026, 3, 3, 14, 58), -3, id="three-part-zone"),
        pytest.param("2026-03-03 11:58:00 Etc/GMT-3", BER, utc(2026, 3, 3, 8, 58), 3,
                     id="etc-zone-with-sign"),
        pytest.param("  2026-03-03T11:58:00+03:00\n", BER, utc(2026, 3, 3, 8, 58), 3,
                     id="surrounding-whitespace"),
    ],
)
def test_parse_timestamp(text: str, tz: ZoneInfo, instant: dt.datetime, offset_h: float) -> None:
    moment = parse_timestamp(text, tz)
    assert moment.tzinfo is not None
    assert moment == instant
    assert moment.utcoffset() == dt.timedelta(hours=offset_h)


def test_naive_timestamp_gets_the_course_zone_itself() -> None:
    # Not just the right offset: the zone, so DST rules apply to later arithmetic.
    assert parse_timestamp("2026-03-03 11:58:00", BER).tzinfo is BER


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("  \n\t", id="blank"),
        pytest.param("garbage", id="garbage"),
        pytest.param("yesterday at noon", id="words"),
        pytest.param("2026-13-03 11:58:00", id="month-13"),
        pytest.param("2026-02-30T11:58:00+03:00", id="impossible-date"),
        pytest.param("2026-03-03 11:58:00 Mars/Olympus_Mons", id="unknown-zone"),
        pytest.param("2026-03-03 11:58:00 Nowhere", id="unknown-single-word-zone"),
        pytest.param("2026-03-03T11:58:00+03:00 Europe/Moscow", id="offset-and-zone"),
    ],
)
def test_parse_timestamp_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text, MSK)


# -- discover ----------------------------------------------------------------------------------


def nb_bytes(tag: str) -> bytes:
    return json.dumps({"cells": [], "metadata": {"tag": tag}, "nbformat": 4,
                       "nbformat_minor": 5}).encode()


def put(root: Path, student: str, assignment: str, files: dict[str, bytes | str]) -> Path:
    folder = root / student / assignment
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            (folder / name).write_text(content, encoding="utf-8")
    return folder


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def only(subs: list[Submission]) -> Submission:
    assert len(subs) == 1, subs
    return subs[0]


def test_sorted_by_assignment_then_student_and_hashed(tmp_path: Path) -> None:
    root = tmp_path / "submitted"
    for student in ("carol", "alice", "bob"):
        for assignment in ("hw2", "hw1"):
            put(root, student, assignment, {f"{assignment}.ipynb": nb_bytes(student + assignment),
                                            "timestamp.txt": STAMP})
    subs = discover(root, NOTEBOOKS, MSK)
    assert [(s.assignment, s.student) for s in subs] == [
        ("hw1", "alice"), ("hw1", "bob"), ("hw1", "carol"),
        ("hw2", "alice"), ("hw2", "bob"), ("hw2", "carol"),
    ]
    for s in subs:
        assert s.sha256 == sha(nb_bytes(s.student + s.assignment))
        assert s.path == root / s.student / s.assignment / f"{s.assignment}.ipynb"
        assert s.submitted_at == STAMP_AT
        assert (s.problem, s.time_problem) == ("", "")


def test_hash_follows_content_not_name(tmp_path: Path) -> None:
    root = tmp_path / "submitted"
    put(root, "alice", "hw1", {"hw1.ipynb": nb_bytes("same"), "timestamp.txt": STAMP})
    put(root, "bob", "hw1", {"hw1.ipynb": nb_bytes("same"), "timestamp.txt": STAMP})
    put(root, "carol", "hw1", {"hw1.ipynb": nb_bytes("other"), "timestamp.txt": STAMP})
    alice, bob, carol = discover(root, NOTEBOOKS, MSK)
    assert alice.sha256 == bob.sha256 == sha(nb_bytes("same"))
    assert carol.sha256 != alice.sha256


@pytest.mark.parametrize(
    ("files", "chosen", "gradable"),
    [
        pytest.param({"hw1.ipynb": nb_bytes("a")}, "hw1.ipynb", True, id="expected-name"),
        pytest.param({"mine.ipynb": nb_bytes("a")}, "mine.ipynb", True, id="single-other-name"),
        pytest.param({"draft.ipynb": nb_bytes("d"), "hw1.ipynb": nb_bytes("a"),
                      "zzz.ipynb": nb_bytes("z")}, "hw1.ipynb", True,
                     id="preferred-among-several"),
        pytest.param({"a.ipynb": nb_bytes("a"), "b.ipynb": nb_bytes("b")}, None, False,
                     id="several-none-preferred"),
        pytest.param({"notes.txt": "hi", "hw1.py": "x = 1"}, None, False, id="no-notebook"),
        pytest.param({}, None, False, id="empty-folder"),
        pytest.param({".hw1.ipynb": nb_bytes("h"), "work.ipynb": nb_bytes("w")}, "work.ipynb",
                     True, id="hidden-notebook-ignored"),
    ],
)
def test_notebook_choice(tmp_path: Path, files: dict[str, bytes | str], chosen: str | None,
                         gradable: bool) -> None:
    root = tmp_path / "submitted"
    folder = put(root, "alice", "hw1", {**files, "timestamp.txt": STAMP})
    sub = only(discover(root, NOTEBOOKS, MSK))
    assert (sub.student, sub.assignment) == ("alice", "hw1")
    assert (sub.problem == "") is gradable
    if chosen is None:
        assert sub.sha256 == ""
    else:
        assert sub.path == folder / chosen
        assert sub.sha256 == sha(files[chosen])  # type: ignore[arg-type]
    assert sub.submitted_at == STAMP_AT  # the time is read whether or not it is gradable


def test_folder_named_like_a_notebook_is_a_problem(tmp_path: Path) -> None:
    root = tmp_path / "submitted"
    folder = put(root, "alice", "hw1", {"timestamp.txt": STAMP})
    (folder / "hw1.ipynb").mkdir()
    sub = only(discover(root, NOTEBOOKS, MSK))
    assert sub.problem
    assert sub.sha256 == ""


@pytest.mark.parametrize(
    ("stamp", "submitted_at"),
    [
        pytest.param(STAMP, STAMP_AT, id="nbgrader"),
        pytest.param(STAMP + "\n", STAMP_AT, id="trailing-newline"),
        pytest.param("2026-11-04 11:58:00", dt.datetime(2026, 11, 4, 11, 58, tzinfo=MSK),
                     id="naive-in-course-zone"),
        pytest.param(None, None, id="missing"),
        pytest.param("", None, id="empty"),
        pytest.param("soon", None, id="garbage"),
        pytest.param(b"\xff\xfe\x00\x01", None, id="binary"),
        pytest.param("2026-11-04 11:58:00 Atlantis/Capital", None, id="unknown-zone"),
    ],
)
def test_submission_time(tmp_path: Path, stamp: str | bytes | None,
                         submitted_at: dt.datetime | None) -> None:
    root = tmp_path / "submitted"
    files: dict[str, bytes | str] = {"hw1.ipynb": nb_bytes("a")}
    if stamp is not None:
        files["timestamp.txt"] = stamp
    put(root, "alice", "hw1", files)
    sub = only(discover(root, NOTEBOOKS, MSK))
    assert sub.submitted_at == submitted_at
    assert (sub.time_problem == "") is (submitted_at is not None)
    # A time problem is not a reason to skip grading: the notebook is still found and hashed.
    assert sub.problem == ""
    assert sub.sha256 == sha(nb_bytes("a"))


def test_timestamp_symlink_is_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "submitted"
    outside = tmp_path / "stamp.txt"
    outside.write_text(STAMP, encoding="utf-8")
    folder = put(root, "alice", "hw1", {"hw1.ipynb": nb_bytes("a")})
    (folder / "timestamp.txt").symlink_to(outside)
    sub = only(discover(root, NOTEBOOKS, MSK))
    assert sub.submitted_at is None
    assert sub.time_problem


def test_notebook_symlink_is_a_problem_and_not_hashed(tmp_path: Path) -> None:
    root = tmp_path / "submitted"
    put(root, "bob", "hw1", {"hw1.ipynb": nb_bytes("bob"), "timestamp.txt": STAMP})
    folder = put(root, "alice", "hw1", {"timestamp.txt": STAMP})
    (folder / "hw1.ipynb").symlink_to(root / "bob" / "hw1" / "hw1.ipynb")
    alice, bob = discover(root, NOTEBOOKS, MSK)
    assert alice.student == "alice"
    assert alice.problem
    assert alice.sha256 == ""
    assert (bob.problem, bob.sha256) == ("", sha(nb_bytes("bob")))


def test_dangling_notebook_symlink_is_a_problem(tmp_path: Path) -> None:
    root = tmp_path / "submitted"
    folder = put(root, "alice", "hw1", {"timestamp.txt": STAMP})
    (folder / "hw1.ipynb").symlink_to(tmp_path / "does-not-exist.ipynb")
    sub = only(discover(root, NOTEBOOKS, MSK))
    assert sub.problem
    assert sub.sha256 == ""


def test_assignment_folder_symlink_is_a_problem(tmp_path: Path) -> None:
    root = tmp_path / "submitted"
    put(root, "bob", "hw1", {"hw1.ipynb": nb_bytes("bob"), "timestamp.txt": STAMP})
    (root / "alice").mkdir()
    (root / "alice" / "hw1").symlink_to(root / "bob" / "hw1", target_is_directory=True)
    alice, bob = discover(root, NOTEBOOKS, MSK)
    assert alice.student == "alice"
    assert alice.problem
    assert (alice.sha256, alice.submitted_at) == ("", None)
    assert bob.problem == ""


def test_student_folder_symlink_is_a_problem(tmp_path: Path) -> None:
    root = tmp_path / "submitted"
    put(root, "bob", "hw1", {"hw1.ipynb": nb_bytes("bob"), "timestamp.txt": STAMP})
    (root / "alice").symlink_to(root / "bob", target_is_directory=True)
    alice, bob = discover(root, NOTEBOOKS, MSK)
    assert alice.student == "alice"
    assert alice.problem
    assert (alice.sha256, alice.submitted_at) == ("", None)
    assert bob.problem == ""


def test_assignment_path_that_is_a_file_is_a_problem(tmp_path: Path) -> None:
    root = tmp_path / "submitted"
    (root / "alice").mkdir(parents=True)
    (root / "alice" / "hw1").write_bytes(nb_bytes("a"))
    sub = only(discover(root, NOTEBOOKS, MSK))
    assert sub.problem
    assert sub.sha256 == ""


def test_other_assignments_hidden_folders_and_stray_files_are_ignored(tmp_path: Path) -> None:
    root = tmp_path / "submitted"
    put(root, "alice", "hw1", {"hw1.ipynb": nb_bytes("a"), "timestamp.txt": STAMP})
    put(root, "alice", "hw9", {"hw9.ipynb": nb_bytes("9"), "timestamp.txt": STAMP})
    put(root, "alice", ".ipynb_checkpoints", {"hw1-checkpoint.ipynb": nb_bytes("c")})
    put(root, ".git", "hw1", {"hw1.ipynb": nb_bytes("g"), "timestamp.txt": STAMP})
    put(root, ".hidden_student", "hw2", {"hw2.ipynb": nb_bytes("h")})
    (root / "README.txt").write_text("not a student", encoding="utf-8")
    (root / "hw2.ipynb").write_bytes(nb_bytes("stray"))
    sub = only(discover(root, NOTEBOOKS, MSK))
    assert (sub.student, sub.assignment, sub.problem) == ("alice", "hw1", "")


def test_only_requested_assignments(tmp_path: Path) -> None:
    root = tmp_path / "submitted"
    put(root, "alice", "hw1", {"hw1.ipynb": nb_bytes("a"), "timestamp.txt": STAMP})
    put(root, "alice", "hw2", {"hw2.ipynb": nb_bytes("b"), "timestamp.txt": STAMP})
    assert [s.assignment for s in discover(root, {"hw2": "hw2.ipynb"}, MSK)] == ["hw2"]


def test_empty_root(tmp_path: Path) -> None:
    assert discover(tmp_path, NOTEBOOKS, MSK) == []


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(SubmissionsError, match="nowhere: no such submissions folder"):
        discover(tmp_path / "nowhere", NOTEBOOKS, MSK)


def test_root_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "submitted").write_text("", encoding="utf-8")
    with pytest.raises(SubmissionsError):
        discover(tmp_path / "submitted", NOTEBOOKS, MSK)


def test_manifest_lists_submissions_with_times(tmp_path: Path) -> None:

    (tmp_path / "nb").mkdir()
    (tmp_path / "nb" / "a1.ipynb").write_text("{}")
    (tmp_path / "nb" / "a2.ipynb").write_text("{ }")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "student,assignment,path,submitted_at\n"
        "alice,hw1,nb/a2.ipynb,2026-11-04T10:00:00Z\n"
        "alice,hw1,nb/a1.ipynb,2026-11-04T09:00:00\n"
        "bob,hw1,nb/missing.ipynb,\n"
        "carol,hw9,nb/a1.ipynb,2026-11-04T09:00:00\n"
        "dave,hw1,nb/a1.ipynb,yesterday\n")
    subs = discover(manifest, {"hw1": "hw1.ipynb"}, MSK)
    assert [(s.student, s.path.name) for s in subs] == [
        ("alice", "a1.ipynb"), ("alice", "a2.ipynb"), ("bob", "missing.ipynb"),
        ("dave", "a1.ipynb")]
    assert subs[0].submitted_at == dt.datetime(2026, 11, 4, 9, tzinfo=MSK)
    assert subs[1].submitted_at == dt.datetime(2026, 11, 4, 10, tzinfo=dt.UTC)
    assert subs[0].sha256 != subs[1].sha256
    assert "does not exist" in subs[2].problem and subs[2].submitted_at is None
    assert subs[2].time_problem and "unreadable" in subs[3].time_problem
    manifest.write_text("student,path\nalice,nb/a1.ipynb\n")
    with pytest.raises(SubmissionsError, match="missing column"):
        discover(manifest, {"hw1": "hw1.ipynb"}, MSK)
