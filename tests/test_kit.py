"""Tests for grader/ship/kit.py and grader/ship/kit_text.py: which homework a kit holds, what files
it has, its README, Makefile and course.toml, deterministic output, and where it may be written.

The secret scan of a built kit is in tests/test_leaks.py; installing a kit into a fresh virtual
environment and running `make check` there is in tests/test_kit_venv.py.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import tomllib
import zipfile
from pathlib import Path

import nbformat
import pytest
from click.testing import CliRunner
from conftest import REPO

from grader.cli.main import main
from grader.course.config import Course, load_course
from grader.course.rules import late_tiers
from grader.errors import KitError, LeakError
from grader.ship.kit import choose, engine_files, kit_files, released, write_kit
from grader.ship.kit_text import deadline_rows

ALL = ("hw1", "hw2", "hw3", "hw4", "hw5", "hw6")


@pytest.fixture(scope="module")
def course() -> Course:
    return load_course(REPO / "course.toml")


def copy_course(target: Path) -> Path:
    """A private copy of the course (course.toml, assignments, solutions, examples)."""
    for folder in ("assignments", "solutions", "examples"):
        shutil.copytree(REPO / folder, target / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "course.toml", target / "course.toml")
    return target / "course.toml"


@pytest.mark.parametrize(
    ("today", "expected"),
    [
        pytest.param(dt.date(2026, 11, 2), (), id="before-the-first-lecture"),
        pytest.param(dt.date(2026, 11, 3), ("hw1",), id="on-the-first-lecture-day"),
        pytest.param(dt.date(2026, 11, 9), ("hw1",), id="the-day-before-the-second"),
        pytest.param(dt.date(2026, 11, 10), ("hw1", "hw2"), id="second-lecture-day"),
        pytest.param(dt.date(2027, 1, 1), ALL, id="after-the-course"),
    ],
)
def test_released_by_lecture_day(course, today, expected):
    assert released(course, today) == expected


def test_choose(course):
    today = dt.date(2026, 11, 18)
    assert choose(course, (), False, today) == (("hw1", "hw2", "hw3"), ())
    assert choose(course, (), True, today) == (ALL, ())
    assert choose(course, ("hw5", "hw2", "hw5"), False, today) == (("hw5", "hw2"), ())


@pytest.mark.parametrize(
    ("requested", "every", "today", "words"),
    [
        pytest.param(("hw1",), True, dt.date(2026, 12, 1), ["--assignment", "--all"], id="both"),
        pytest.param(("hw9",), False, dt.date(2026, 12, 1), ["'hw9'"], id="unknown"),
        pytest.param((), False, dt.date(2026, 10, 1), ["2026-11-03", "--all"], id="none-yet"),
    ],
)
def test_choose_refuses(course, requested, every, today, words):
    with pytest.raises(KitError) as info:
        choose(course, requested, every, today)
    for word in words:
        assert word in str(info.value)


def test_a_homework_without_a_notebook_is_left_out_or_refused(tmp_path):
    course = load_course(copy_course(tmp_path))
    (tmp_path / "assignments" / "hw6" / "hw6.ipynb").unlink()
    chosen, skipped = choose(course, (), True, dt.date(2026, 12, 20))
    assert chosen == ALL[:5]
    assert len(skipped) == 1 and "hw6" in skipped[0] and "hw6.ipynb" in skipped[0]
    with pytest.raises(KitError, match="hw6.ipynb"):
        choose(course, ("hw6",), False, dt.date(2026, 12, 20))


def test_a_drifted_student_notebook_is_refused(tmp_path):
    course = load_course(copy_course(tmp_path))
    student = tmp_path / "assignments" / "hw2" / "hw2.ipynb"
    nb = nbformat.read(student, as_version=4)
    nb.cells[0].source += "\nan edit made by hand"
    nbformat.write(nb, student)
    with pytest.raises(KitError, match="release-notebooks"):
        kit_files(course, ("hw2",))


INSTRUCTOR_ONLY = ("commands", "audit", "mutate", "harness", "kit", "kit_text", "leaks", "pages",
                   "report", "similarity", "pipeline", "pool", "store", "export", "release")


@pytest.fixture(scope="module")
def kit(tmp_path_factory, course) -> Path:
    out = tmp_path_factory.mktemp("release") / "kit"
    write_kit(course, out, ("hw1", "hw6"), archive=True)
    return out


def test_the_kit_holds_what_make_check_needs_and_nothing_else(kit):
    files = {p.relative_to(kit).as_posix() for p in kit.rglob("*") if p.is_file()}
    engine = {f"grader/{name}" for name in engine_files()}
    # the student's command and what it runs are in; the instructor's tools are not
    assert {"grader/cli/main.py", "grader/pipeline/grading.py", "grader/checks.py",
            "grader/kernel/bridge/serve.py"} <= engine
    assert not engine & {f"grader/{m}.py" for m in INSTRUCTOR_ONLY}
    nncourse = {p.relative_to(REPO / "assignments").as_posix()
                for p in (REPO / "assignments" / "nncourse").rglob("*")
                if p.suffix in (".py", ".pt")}
    homework = {f"assignments/{a}/{name}" for a in ("hw1", "hw6")
                for name in (f"{a}.ipynb", f"checks/test_{a}_public.py")}
    generated = {"README.md", "Makefile", "pyproject.toml", "course.toml", ".gitignore"}
    assert files == engine | {f"assignments/{n}" for n in nncourse} | homework | generated
    assert any(name.endswith(".pt") for name in files)  # the weights travel with the kit
    for name in homework | {f"assignments/{n}" for n in nncourse}:
        assert (kit / name).read_bytes() == (REPO / name).read_bytes()


def test_the_zip_holds_the_same_files_in_one_folder(kit):
    with zipfile.ZipFile(kit.with_name("kit.zip")) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    on_disk = {f"kit/{p.relative_to(kit).as_posix()}": p.read_bytes()
               for p in kit.rglob("*") if p.is_file()}
    assert members == on_disk


def test_the_kit_is_deterministic(tmp_path, course):
    for name in ("a", "b"):
        write_kit(course, tmp_path / name / "kit", ("hw1", "hw2"), archive=True)
    first, second = (sorted((tmp_path / n / "kit").rglob("*")) for n in ("a", "b"))
    assert [p.relative_to(tmp_path / "a") for p in first] == \
        [p.relative_to(tmp_path / "b") for p in second]
    for a, b in zip(first, second, strict=True):
        assert a.is_dir() or a.read_bytes() == b.read_bytes(), a
    assert (tmp_path / "a" / "kit.zip").read_bytes() == (tmp_path / "b" / "kit.zip").read_bytes()


def test_the_kit_course_file_has_the_released_homework_and_no_instructor_files(tmp_path):
    course_path = copy_course(tmp_path / "course")
    (tmp_path / "course" / "roster.csv").write_text("student,name,email\nzelda,Z,z@x.org\n")
    (tmp_path / "course" / "extensions.csv").write_text("student,assignment,extension\n"
                                                        "zelda,hw1,2d\n")
    text = course_path.read_text().replace(
        'late_policy = "cap"',
        'late_policy = "scale"\nroster = "roster.csv"\nextensions = "extensions.csv"')
    course_path.write_text(text.replace('sandbox = "auto"', 'sandbox = "required"'))
    source = load_course(course_path)
    assert source.roster and source.extensions
    write_kit(source, tmp_path / "kit", ("hw2", "hw3"))

    kit = load_course(tmp_path / "kit" / "course.toml")
    assert [a for a in kit.assignments] == [source.assignment("hw2"), source.assignment("hw3")]
    assert kit.roster == () and dict(kit.extensions) == {}
    assert "roster" not in (tmp_path / "kit" / "course.toml").read_text()
    for key in ("name", "timezone", "deadline_time", "late_policy", "last_lecture_day",
                "pass_rule"):
        assert getattr(kit, key) == getattr(source, key)
    assert kit.limits.sandbox == "auto"  # a student's laptop may have no bubblewrap
    assert {**kit.limits.__dict__, "sandbox": "required"} == source.limits.__dict__
    assert "scales the score" in (tmp_path / "kit" / "README.md").read_text()


def readme_deadlines(readme: str) -> dict[str, list[str]]:
    rows = [line.split(" | ") for line in readme.splitlines() if re.match(r"\| hw\d ", line)]
    return {row[0].strip("| "): [c.strip("| ") for c in row[3:6]] for row in rows if len(row) == 6}


def test_readme_deadlines_are_the_graders_last_minutes(kit, course):
    shown = readme_deadlines((kit / "README.md").read_text())
    assert set(shown) == {"hw1", "hw6"}
    for a, cells in shown.items():
        tiers = late_tiers(course.assignment(a).lecture_day, course.last_lecture_day,
                           course.timezone, course.deadline_time)
        expected = ["-"] * 3
        for tier in tiers:
            last = tier.deadline - dt.timedelta(minutes=1)
            expected[(100.0, 75.0, 50.0).index(tier.cap)] = \
                f"{last:%a} {last.day} {last:%b %Y}, {last:%H:%M}"
        assert cells == expected
    assert shown["hw1"] == ["Wed 4 Nov 2026, 11:59", "Thu 5 Nov 2026, 11:59",
                            "Tue 8 Dec 2026, 11:59"]
    assert shown["hw6"][2] == "-"  # given on the last lecture day: no 50 % window


def test_deadlines_across_a_dst_change_carry_their_offsets(tmp_path):
    course_path = copy_course(tmp_path)
    course_path.write_text(course_path.read_text().replace("Europe/Moscow", "America/New_York"))
    # hw1 on Tue 3 Nov 2026: every deadline in EST (New York left daylight time on 1 Nov)
    hw1 = deadline_rows(load_course(course_path), ["hw1"])[0]
    assert hw1[3:] == ["Wed 4 Nov 2026, 11:59", "Thu 5 Nov 2026, 11:59", "Tue 8 Dec 2026, 11:59"]
    # given on Fri 30 Oct: D+1 still in daylight time, D+2 not; each time says its offset
    course_path.write_text(course_path.read_text().replace("lecture_day = 2026-11-03",
                                                           "lecture_day = 2026-10-30"))
    hw1 = deadline_rows(load_course(course_path), ["hw1"])[0]
    assert hw1[3:] == ["Sat 31 Oct 2026, 11:59 (UTC-04:00)", "Sun 1 Nov 2026, 11:59 (UTC-05:00)",
                       "Tue 8 Dec 2026, 11:59 (UTC-05:00)"]


def test_readme_says_how_to_set_up_check_and_hand_in(kit, course):
    readme = (kit / "README.md").read_text()
    for text in ("make install", "python3 -m venv .venv", "pip install torch==2.13.0",
                 "make check HW=hw1", "`hw1.ipynb`", "hidden checks", "Error 1", "Error 2",
                 "Europe/Moscow", "at least 50 %", "4 of the 5 required homework",
                 "hw6 is optional", "after 30 s", "after 240 s"):
        assert text in readme, text
    assert "solutions" not in readme and "hw2.ipynb" not in readme


def test_makefile_lists_the_released_homework(kit):
    makefile = (kit / "Makefile").read_text()
    assert "HOMEWORK := hw1 hw6" in makefile
    assert "NOTEBOOK_hw6 := assignments/hw6/hw6.ipynb" in makefile
    assert "pip install -q $(TORCH)" in makefile.split("pip install -q -e .")[0]


def test_pyproject_asks_for_what_the_kit_imports_with_the_engines_pins(kit, course):
    kit_project = tomllib.loads((kit / "pyproject.toml").read_text())["project"]
    repo_project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    asked = set(kit_project["dependencies"])
    assert asked <= set(repo_project["dependencies"])  # each exactly as the engine pins it
    names = {re.split(r"[<>=]", r)[0].lower() for r in asked}
    # the kit imports them (its engine, nncourse, notebooks, checks), or they run its notebooks
    assert {"torch", "pytest", "nbclient", "ipykernel", "click", "rich"} <= names
    # what only the instructor's tools import is not installed on a student's laptop
    assert not names & {"jinja2", "pandas", "copydetect", "pyahocorasick", "scikit-learn"}
    assert kit_project["scripts"] == repo_project["scripts"]
    # a homework's own libraries come with it: tensorly (hw3), onnx and its exporter (hw5)
    everything = kit_files(course, ALL)["pyproject.toml"].decode()
    assert "tensorly" in everything and "onnxscript" in everything
    assert "tensorly" not in (kit / "pyproject.toml").read_text()


def test_an_existing_folder_is_kept_unless_an_earlier_kit_is_to_be_replaced(tmp_path, course):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    with pytest.raises(KitError, match="not empty"):
        write_kit(course, mine, ("hw1",))
    with pytest.raises(KitError, match="not a kit"):
        write_kit(course, mine, ("hw1",), replace=True)
    assert (mine / "notes.txt").read_text() == "precious"

    write_kit(course, tmp_path / "kit", ("hw1",), archive=True)
    with pytest.raises(KitError, match="not empty"):
        write_kit(course, tmp_path / "kit", ("hw2",))
    write_kit(course, tmp_path / "kit", ("hw2",), archive=True, replace=True)
    assert not (tmp_path / "kit" / "assignments" / "hw1").exists()
    assert (tmp_path / "kit" / "assignments" / "hw2" / "hw2.ipynb").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_the_kit_is_never_written_over_the_course(tmp_path):
    course = load_course(copy_course(tmp_path))
    with pytest.raises(KitError, match="over the course"):
        write_kit(course, tmp_path, ("hw1",), replace=True)
    assert (tmp_path / "solutions").is_dir()


def test_a_kit_that_would_leak_is_not_written(tmp_path):
    course = load_course(copy_course(tmp_path / "course"))
    hidden = (tmp_path / "course" / "solutions" / "hw1" / "checks" / "test_hw1.py").read_text()
    public = tmp_path / "course" / "assignments" / "hw1" / "checks" / "test_hw1_public.py"
    public.write_text(public.read_text() + "\n\n" + hidden)  # a hidden check pasted in
    with pytest.raises(LeakError) as info:
        write_kit(course, tmp_path / "kit", ("hw1",), archive=True)
    assert info.value.leaks and "a hidden check" in str(info.value)
    assert not (tmp_path / "kit").exists() and not (tmp_path / "kit.zip").exists()


def cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_cli_release(tmp_path):
    course = str(REPO / "course.toml")
    result = cli("release", str(tmp_path / "kit"), "--course", course, "--all", "--zip")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "kit.zip").is_file()
    assert len(list((tmp_path / "kit" / "assignments").glob("hw*/hw*.ipynb"))) == 6
    result = cli("release", str(tmp_path / "early"), "--course", course, "--as-of", "2026-11-12")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "early" / "assignments").glob("hw*")) == \
        ["hw1", "hw2"]


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--all", "--assignment", "hw1"], id="all-and-assignment"),
        pytest.param(["--as-of", "2026-01-01"], id="nothing-released-yet"),
        pytest.param(["--assignment", "hw9"], id="unknown-homework"),
    ],
)
def test_cli_release_usage_errors(tmp_path, args):
    result = cli("release", str(tmp_path / "kit"), "--course", str(REPO / "course.toml"), *args)
    assert result.exit_code == 2
    assert not (tmp_path / "kit").exists()


def test_cli_release_into_a_used_folder_is_a_usage_error(tmp_path):
    (tmp_path / "kit").mkdir()
    (tmp_path / "kit" / "keep.txt").write_text("x")
    result = cli("release", str(tmp_path / "kit"), "--course", str(REPO / "course.toml"), "--all")
    assert result.exit_code == 2 and "not empty" in result.output


def test_cli_release_that_would_leak_exits_1(tmp_path):
    course = copy_course(tmp_path / "course")
    public = tmp_path / "course" / "assignments" / "hw2" / "checks" / "test_hw2_public.py"
    public.write_text(public.read_text() + "\n# solutions/hw2/checks/test_hw2.py\n")
    result = cli("release", str(tmp_path / "kit"), "--course", str(course), "--all")
    assert result.exit_code == 1
    assert "solutions/hw2/checks/test_hw2.py" in result.output
    assert not (tmp_path / "kit").exists()
