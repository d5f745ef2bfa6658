"""Tests for grader/course/config.py: the repository's course.toml loads, and every kind of mistake
in a course.toml is a ConfigError that names the file and the dotted key.

Each bad file is the small valid ``BASE`` below with one textual edit, written into tmp_path.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from grader.course.config import AuditSettings, ConfigError, load_course
from grader.course.rules import LatePolicy
from grader.records import Limits

REPO_COURSE = Path(__file__).resolve().parents[1] / "course.toml"

BASE = """\
[course]
name = "Test course"
timezone = "Europe/Moscow"
deadline_time = "11:59"
late_policy = "cap"
last_lecture_day = 2026-12-08

[pass_rule]
min_percent = 50.0
min_required = 1

[limits]
cell_timeout_s = 10
memory_mb = 1024

[[assignment]]
id = "hw1"
title = "One"
lecture_day = 2026-11-03
required = true
notebook = "hw1.ipynb"

[[assignment]]
id = "hw2"
title = "Two"
lecture_day = 2026-11-10
required = false
notebook = "hw2.ipynb"
"""


def write_course(tmp_path: Path, old: str = "", new: str = "") -> Path:
    """BASE with the text ``old`` replaced by ``new`` (which must change something)."""
    text = BASE
    if old:
        assert text.count(old) == 1, f"edit anchor {old!r} must occur exactly once"
        text = text.replace(old, new)
    path = tmp_path / "course.toml"
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path) -> str:
    """The ConfigError message for ``path``, minus the file name (so a key that happens to be in
    tmp_path's name cannot satisfy an assertion); the file name itself must be there."""
    with pytest.raises(ConfigError) as info:
        load_course(path)
    message = str(info.value)
    full = str(path.resolve())
    assert full in message
    return message.replace(full, "<file>")


def test_repository_course_loads() -> None:
    course = load_course(REPO_COURSE)
    assert course.path == REPO_COURSE
    assert [a.id for a in course.assignments] == ["hw1", "hw2", "hw3", "hw4", "hw5", "hw6"]
    assert [a.required for a in course.assignments] == [True] * 5 + [False]
    assert [a.notebook for a in course.assignments] == [f"hw{i}.ipynb" for i in range(1, 7)]
    assert course.assignment("hw1").lecture_day == dt.date(2026, 11, 3)
    assert course.timezone.key == "Europe/Moscow"
    assert course.deadline_time == dt.time(11, 59)
    assert course.late_policy is LatePolicy.CAP
    assert course.last_lecture_day == dt.date(2026, 12, 8)
    assert (course.pass_rule.min_percent, course.pass_rule.min_required) == (50.0, 4)
    # The limits are tuned while the course runs, so compare with the file's own values.
    written = tomllib.loads(REPO_COURSE.read_text(encoding="utf-8"))["limits"]
    for field in fields(Limits):
        default = getattr(Limits(), field.name)
        loaded = getattr(course.limits, field.name)
        assert loaded == written.get(field.name, default), field.name
        assert type(loaded) is type(default), field.name
    assert all(a.lecture_day <= course.last_lecture_day for a in course.assignments)
    similarity = tomllib.loads(REPO_COURSE.read_text(encoding="utf-8"))["similarity"]
    assert course.similarity_threshold == similarity["threshold"]


def test_small_course_loads_with_defaults_and_int_to_float(tmp_path: Path) -> None:
    course = load_course(write_course(tmp_path))
    assert [(a.id, a.required) for a in course.assignments] == [("hw1", True), ("hw2", False)]
    # cell_timeout_s = 10 is a TOML integer; a float field takes it as 10.0.
    assert course.limits.cell_timeout_s == 10.0
    assert isinstance(course.limits.cell_timeout_s, float)
    assert course.limits.memory_mb == 1024
    # Keys not given take Limits' defaults.
    assert course.limits.cpu_s == Limits().cpu_s
    assert course.limits.notebook_timeout_s == Limits().notebook_timeout_s
    assert course.similarity_threshold == 0.5  # no [similarity] table: the default


def test_similarity_threshold_is_read(tmp_path: Path) -> None:
    path = write_course(tmp_path, "[limits]", "[similarity]\nthreshold = 1\n[limits]")
    course = load_course(path)
    assert course.similarity_threshold == 1.0


def test_audit_settings_default_or_as_written(tmp_path: Path) -> None:
    assert load_course(write_course(tmp_path)).audit == AuditSettings()
    written = write_course(tmp_path, "[limits]\n",
                           "[audit]\nmin_kill_rate = 97\nmutants = 12\n[limits]\n")
    audit = load_course(written).audit
    assert (audit.min_kill_rate, audit.mutants, audit.seeds) == (97.0, 12, AuditSettings().seeds)
    repository = tomllib.loads(REPO_COURSE.read_text(encoding="utf-8"))["audit"]
    assert load_course(REPO_COURSE).audit == AuditSettings(**repository)


def test_relative_path_is_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_course(tmp_path)
    monkeypatch.chdir(tmp_path)
    course = load_course(Path("course.toml"))
    assert course.path == (tmp_path / "course.toml").resolve()
    assert course.root == tmp_path.resolve()
    assert course.hidden_checks("hw1") == tmp_path.resolve() / "solutions" / "hw1" / "checks"


def test_unknown_assignment_id(tmp_path: Path) -> None:
    course = load_course(write_course(tmp_path))
    with pytest.raises(ConfigError):
        course.assignment("hw9")


BAD = [
    # unknown keys
    pytest.param("[course]\n", "colour = 1\n[course]\n", "colour", id="unknown-top-level"),
    pytest.param('late_policy = "cap"\n', 'late_policy = "cap"\nlate_polcy = "cap"\n',
                 "course.late_polcy", id="unknown-in-course"),
    pytest.param("memory_mb = 1024\n", "memory_mb = 1024\nmemroy_mb = 1\n", "limits.memroy_mb",
                 id="unknown-in-limits"),
    pytest.param("min_required = 1\n", "min_required = 1\nmin_requried = 2\n",
                 "pass_rule.min_requried", id="unknown-in-pass-rule"),
    pytest.param('notebook = "hw2.ipynb"\n', 'notebook = "hw2.ipynb"\ndeadline = 2026-11-11\n',
                 "assignment[1].deadline", id="unknown-in-assignment"),
    # wrong types
    pytest.param("memory_mb = 1024", 'memory_mb = "1024"', "limits.memory_mb",
                 id="string-where-int"),
    pytest.param("memory_mb = 1024", "memory_mb = true", "limits.memory_mb",
                 id="bool-where-int"),
    pytest.param("cell_timeout_s = 10", "cell_timeout_s = true", "limits.cell_timeout_s",
                 id="bool-where-float"),
    pytest.param("cell_timeout_s = 10", 'cell_timeout_s = "10"', "limits.cell_timeout_s",
                 id="string-where-float"),
    pytest.param("min_required = 1", "min_required = 1.0", "pass_rule.min_required",
                 id="float-where-int"),
    pytest.param("required = false", 'required = "no"', "assignment[1].required",
                 id="string-where-bool"),
    pytest.param('name = "Test course"', "name = 5", "course.name", id="int-where-string"),
    pytest.param('id = "hw2"', "id = 2", "assignment[1].id", id="int-id"),
    # missing keys
    pytest.param('name = "Test course"\n', "", "course.name", id="missing-name"),
    pytest.param('notebook = "hw1.ipynb"\n', "", "assignment[0].notebook",
                 id="missing-notebook"),
    # dates
    pytest.param("last_lecture_day = 2026-12-08", 'last_lecture_day = "2026-02-30"',
                 "course.last_lecture_day", id="impossible-date-string"),
    pytest.param("lecture_day = 2026-11-10", 'lecture_day = "next tuesday"',
                 "assignment[1].lecture_day", id="not-a-date"),
    pytest.param("lecture_day = 2026-11-10", "lecture_day = 2026-11-10T10:00:00",
                 "assignment[1].lecture_day", id="datetime-not-date"),
    pytest.param("lecture_day = 2026-11-10", "lecture_day = 2026-12-09",
                 "assignment[1].lecture_day", id="lecture-after-last-lecture-day"),
    # course settings
    pytest.param('timezone = "Europe/Moscow"', 'timezone = "Europe/Atlantis"', "course.timezone",
                 id="unknown-time-zone"),
    pytest.param('timezone = "Europe/Moscow"', 'timezone = "../../etc/passwd"',
                 "course.timezone", id="time-zone-path"),
    pytest.param('deadline_time = "11:59"', 'deadline_time = "25:00"', "course.deadline_time",
                 id="deadline-hour-25"),
    pytest.param('deadline_time = "11:59"', 'deadline_time = "noon"', "course.deadline_time",
                 id="deadline-noon"),
    pytest.param('late_policy = "cap"', 'late_policy = "Cap"', "course.late_policy",
                 id="late-policy-case"),
    pytest.param('late_policy = "cap"', 'late_policy = "halve"', "course.late_policy",
                 id="late-policy-unknown"),
    # the similarity flags
    pytest.param("[limits]", "[similarity]\nthreshold = 0.0\n[limits]", "similarity.threshold",
                 id="similarity-threshold-zero"),
    pytest.param("[limits]", "[similarity]\nthreshold = 50\n[limits]", "similarity.threshold",
                 id="similarity-threshold-percent"),
    pytest.param("[limits]", '[similarity]\nthreshold = "high"\n[limits]',
                 "similarity.threshold", id="similarity-threshold-string"),
    pytest.param("[limits]", "[similarity]\nthreshhold = 0.5\n[limits]",
                 "similarity.threshhold", id="similarity-unknown-key"),
    # the audit's settings
    pytest.param("[limits]\n", "[audit]\nmutant = 3\n[limits]\n", "audit.mutant",
                 id="unknown-in-audit"),
    pytest.param("[limits]\n", '[audit]\nseeds = "many"\n[limits]\n', "audit.seeds",
                 id="string-where-int-in-audit"),
    pytest.param("[limits]\n", "[audit]\nmutants = 4.5\n[limits]\n", "audit.mutants",
                 id="float-where-int-in-audit"),
    pytest.param("[limits]\n", "[audit]\nmin_kill_rate = true\n[limits]\n",
                 "audit.min_kill_rate", id="bool-where-float-in-audit"),
]


@pytest.mark.parametrize(("old", "new", "dotted"), BAD)
def test_bad_course_names_file_and_key(tmp_path: Path, old: str, new: str, dotted: str) -> None:
    message = config_error(write_course(tmp_path, old, new))
    assert dotted in message


# Values that load today but make grading crash later (grader.course.rules raises ValueError for a
# deadline_time that is not a whole minute or carries a UTC offset, and for a pass rule
# outside 0..100 % or a negative count): they belong to course.toml, so they must be
# ConfigErrors at load time, naming the key.
LOADS_BUT_CRASHES_LATER = [
    pytest.param('deadline_time = "11:59"', 'deadline_time = "11:59:30"', "course.deadline_time",
                 id="deadline-with-seconds"),
    pytest.param('deadline_time = "11:59"', 'deadline_time = "11:59+03:00"',
                 "course.deadline_time", id="deadline-with-offset"),
    pytest.param("min_percent = 50.0", "min_percent = 150.0", "pass_rule.min_percent",
                 id="min-percent-over-100"),
    pytest.param("min_required = 1", "min_required = -1", "pass_rule.min_required",
                 id="min-required-negative"),
    pytest.param("[limits]\n", "[audit]\nmin_kill_rate = 101\n[limits]\n",
                 "audit.min_kill_rate", id="kill-rate-over-100"),
    pytest.param("[limits]\n", "[audit]\nslow_seeds = -1\n[limits]\n", "audit.slow_seeds",
                 id="slow-seeds-negative"),
]


@pytest.mark.parametrize(("old", "new", "dotted"), LOADS_BUT_CRASHES_LATER)
def test_values_the_rules_reject_are_config_errors(tmp_path: Path, old: str, new: str,
                                                   dotted: str) -> None:
    message = config_error(write_course(tmp_path, old, new))
    assert dotted in message


def test_duplicate_assignment_ids_name_the_repeated_entry(tmp_path: Path) -> None:
    message = config_error(write_course(tmp_path, 'id = "hw2"', 'id = "hw1"'))
    assert "assignment[1].id" in message


def test_impossible_toml_date_literal_names_the_key(tmp_path: Path) -> None:
    # A bare TOML date that does not exist fails inside tomllib, which only gives line and
    # column; the message must still let the reader find the key.
    path = write_course(tmp_path, "last_lecture_day = 2026-12-08", "last_lecture_day = 2026-02-30")
    message = config_error(path)
    assert "last_lecture_day" in message


def test_no_assignments(tmp_path: Path) -> None:
    text = BASE.split("[[assignment]]")[0] + "assignment = []\n"
    path = tmp_path / "course.toml"
    path.write_text(text, encoding="utf-8")
    config_error(path)


def test_missing_file(tmp_path: Path) -> None:
    config_error(tmp_path / "nowhere" / "course.toml")


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"[course\nname = 1\n", id="unclosed-table"),
        pytest.param(b'[course]\nname = "a"\nname = "b"\n', id="repeated-key"),
        pytest.param(b"\xff\xfe[course]\n", id="not-utf8"),
    ],
)
def test_invalid_toml(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "course.toml"
    path.write_bytes(content)
    config_error(path)


def _course_with(tmp_path: Path, extra: str) -> Path:
    text = REPO_COURSE.read_text().replace('late_policy = "cap"', 'late_policy = "cap"\n' + extra)
    path = tmp_path / "course.toml"
    path.write_text(text)
    return path


def test_roster_and_extensions_files_load(tmp_path: Path) -> None:
    (tmp_path / "roster.csv").write_text("student,name,email\nbob,Bob B,b@x\nalice,\"A, Al\",\n")
    (tmp_path / "ext.csv").write_text("student,assignment,extension\nbob,hw1,48h\n"
                                      "alice,hw2,2026-11-12\nalice,hw3,1d 12h\n")
    course = load_course(_course_with(tmp_path, 'roster = "roster.csv"\n'
                                                'extensions = "ext.csv"\ncounted = "best"'))
    assert [s.id for s in course.roster] == ["alice", "bob"]
    assert course.roster[0].name == "A, Al" and course.counted == "best"
    assert course.extensions[("bob", "hw1")].extra == dt.timedelta(hours=48)
    assert course.extensions[("alice", "hw2")].new_base_date == dt.date(2026, 11, 12)
    assert course.extensions[("alice", "hw3")].extra == dt.timedelta(days=1, hours=12)


@pytest.mark.parametrize("content, problem", [
    ("student,assignment\nbob,hw1\n", "missing column"),
    ("student,assignment,extension\nbob,hw9,48h\n", "line 2: unknown assignment 'hw9'"),
    ("student,assignment,extension\nbob,hw1,soon\n", "line 2: expected extra time"),
    ("student,assignment,extension\nbob,hw1,48h\nbob,hw1,2d\n", "line 3: a second extension"),
    ("student,assignment,extension\nbob,hw1,0h\n", "line 2: Extension.extra must be positive"),
], ids=["header", "unknown-ha", "bad-duration", "twice", "zero"])
def test_bad_extensions_name_file_and_line(tmp_path: Path, content: str, problem: str) -> None:
    (tmp_path / "ext.csv").write_text(content)
    with pytest.raises(ConfigError) as info:
        load_course(_course_with(tmp_path, 'extensions = "ext.csv"'))
    assert str(tmp_path / "ext.csv") in str(info.value) and problem in str(info.value)


@pytest.mark.parametrize("content, problem", [
    ("name,email\nBob,b@x\n", "missing column"),
    ("student,name\nbob,B\nbob,C\n", "line 3: student 'bob' listed twice"),
    ("student,name\n,B\n", "line 2: empty student id"),
], ids=["header", "twice", "empty"])
def test_bad_roster_names_file_and_line(tmp_path: Path, content: str, problem: str) -> None:
    (tmp_path / "roster.csv").write_text(content)
    with pytest.raises(ConfigError) as info:
        load_course(_course_with(tmp_path, 'roster = "roster.csv"'))
    assert str(tmp_path / "roster.csv") in str(info.value) and problem in str(info.value)


def test_a_missing_roster_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="roster.csv: file not found"):
        load_course(_course_with(tmp_path, 'roster = "roster.csv"'))
