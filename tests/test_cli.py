"""The command line: exit codes, help texts, and that the README documents every command."""

from __future__ import annotations

import shutil
from pathlib import Path

import click
import nbformat
import pytest
from click.testing import CliRunner
from conftest import REPO, write_notebook

from grader.cli.main import main

COMMANDS = main.list_commands(click.Context(main))


def run(*args: str, cwd: Path | None = None):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    result = run(command, "--help")
    assert result.exit_code == 0
    assert "Example: grader " + command in " ".join(result.output.split())


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_is_in_the_readme(command):
    assert f"grader {command}" in (REPO / "README.md").read_text()


@pytest.mark.parametrize("command, sub", [
    (name, sub) for name in COMMANDS if isinstance(main.get_command(click.Context(main), name),
                                                   click.Group)
    for sub in main.get_command(click.Context(main), name).commands])  # type: ignore[union-attr]
def test_every_subcommand_is_in_the_readme_with_an_example(command, sub):
    assert f"grader {command} {sub}" in (REPO / "README.md").read_text()
    result = run(command, sub, "--help")
    assert result.exit_code == 0
    assert f"Example: grader {command} {sub}" in " ".join(result.output.split())


def test_the_readme_limits_table_gives_every_limit_and_its_default():
    import dataclasses
    import re

    from grader.records import Limits

    text = (REPO / "README.md").read_text()
    table = dict(re.findall(r"^\| `(\w+)` \| ([^|]+?) \|", text, flags=re.MULTILINE))
    for field in dataclasses.fields(Limits):
        default = getattr(Limits(), field.name)
        assert field.name in table, f"README's limits table lacks {field.name}"
        assert table[field.name] == (default if isinstance(default, str) else f"{default:g}")


def test_the_readme_status_table_names_every_status():
    from grader.records import Status

    text = (REPO / "README.md").read_text()
    for status in Status:
        assert f"| `{status.value}` |" in text, status


def test_readme_starts_with_the_two_newcomer_commands():
    lines = [ln.strip() for ln in (REPO / "README.md").read_text().splitlines()]
    first_commands = [ln for ln in lines if ln.startswith("make ")][:2]
    assert first_commands == ["make demo", "make test"]


def test_ci_runs_the_readme_test_command():
    assert "make lint test" in (REPO / ".ci" / "run").read_text()


def test_a_broken_course_file_is_a_usage_error_naming_it(tmp_path):
    bad = tmp_path / ("a-folder-name-long-enough-that-a-wrapped-line-would-cut-it-" * 2) / "c.toml"
    bad.parent.mkdir()
    bad.write_text("[course]\nname = 3\n")
    result = run("grade", str(tmp_path), "--course", str(bad))
    assert result.exit_code == 2
    assert str(bad) in result.output and "course.name" in result.output


def test_grading_a_missing_folder_is_a_usage_error(tmp_path):
    result = run("grade", str(tmp_path / "nowhere"), "--course", str(REPO / "course.toml"),
                 "--gradebook", str(tmp_path / "g.sqlite"))
    assert result.exit_code == 2 and "nowhere" in result.output


def test_an_unknown_assignment_is_a_usage_error(tmp_path):
    result = run("grade", str(tmp_path), "--course", str(REPO / "course.toml"),
                 "--gradebook", str(tmp_path / "g.sqlite"), "--assignment", "hw9")
    assert result.exit_code == 2 and "hw9" in result.output


def test_checks_without_points_stop_the_run_before_any_grading(tmp_path):
    course = tmp_path / "course"
    shutil.copytree(REPO / "assignments", course / "assignments",
                    ignore=shutil.ignore_patterns("*.ipynb", "weights"))
    shutil.copy(REPO / "course.toml", course / "course.toml")
    checks = course / "solutions" / "hw1" / "checks"
    checks.mkdir(parents=True)
    (checks / "test_x.py").write_text("def test_unweighted(student):\n    pass\n")
    subs = tmp_path / "subs"
    write_notebook(subs / "alice" / "hw1" / "hw1.ipynb", "x = 1")
    result = run("grade", str(subs), "--course", str(course / "course.toml"),
                 "--gradebook", str(tmp_path / "g.sqlite"), "--csv", str(tmp_path / "g.csv"))
    assert result.exit_code == 2
    assert "test_unweighted" in result.output and "points" in result.output
    assert not (tmp_path / "g.csv").exists()


def test_export_without_a_gradebook_is_a_usage_error(tmp_path):
    result = run("export", "--course", str(REPO / "course.toml"),
                 "--gradebook", str(tmp_path / "none.sqlite"))
    assert result.exit_code == 2 and "grader grade" in result.output


def test_check_of_an_unreadable_notebook_is_a_usage_error(tmp_path):
    nb = tmp_path / "hw1" / "hw1.ipynb"
    nb.parent.mkdir()
    nb.write_text("{not json")
    result = run("check", str(nb), "--course", str(REPO / "course.toml"))
    assert result.exit_code == 2 and "hw1.ipynb" in result.output


def test_check_needs_a_known_assignment(tmp_path):
    nb = write_notebook(tmp_path / "mystery" / "x.ipynb", "x = 1")
    result = run("check", str(nb), "--course", str(REPO / "course.toml"))
    assert result.exit_code == 2 and "--assignment" in result.output


def test_student_notebooks_match_the_references():
    result = run("release-notebooks", "--check", "--course", str(REPO / "course.toml"))
    assert result.exit_code == 0, result.output


def golden_gradebook(path: Path) -> None:
    from rows import golden_rows

    from grader.course.config import load_course
    from grader.pipeline.store import open_gradebook

    with open_gradebook(path) as book:
        for row in golden_rows(load_course(REPO / "course.toml")):
            book.put(row)


def test_report_without_a_gradebook_is_a_usage_error(tmp_path):
    result = run("report", "--course", str(REPO / "course.toml"),
                 "--gradebook", str(tmp_path / "none.sqlite"), "--out", str(tmp_path / "r.html"))
    assert result.exit_code == 2 and "grader grade" in result.output
    assert not (tmp_path / "r.html").exists()


def test_report_with_an_unreadable_time_is_a_usage_error(tmp_path):
    golden_gradebook(tmp_path / "g.sqlite")
    result = run("report", "--course", str(REPO / "course.toml"), "--gradebook",
                 str(tmp_path / "g.sqlite"), "--out", str(tmp_path / "r.html"), "--as-of", "soon")
    assert result.exit_code == 2 and "--as-of" in result.output


def test_report_into_a_folder_is_a_usage_error_naming_it(tmp_path):
    golden_gradebook(tmp_path / "g.sqlite")
    (tmp_path / "taken").mkdir()
    result = run("report", "--course", str(REPO / "course.toml"), "--gradebook",
                 str(tmp_path / "g.sqlite"), "--out", str(tmp_path / "taken"))
    assert result.exit_code == 2 and str(tmp_path / "taken") in result.output
    assert (tmp_path / "taken").is_dir()


def test_report_and_export_write_the_pages(tmp_path):
    golden_gradebook(tmp_path / "g.sqlite")
    out = tmp_path / "out" / "report.html"
    result = run("report", "--course", str(REPO / "course.toml"), "--gradebook",
                 str(tmp_path / "g.sqlite"), "--out", str(out), "--as-of", "2026-12-20")
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8").count("<img ") == 7
    # the golden rows' notebooks do not exist: the report says so rather than failing
    assert "file gone: /submitted/alice/hw1/hw1.ipynb" in out.read_text(encoding="utf-8")
    result = run("export", "--course", str(REPO / "course.toml"), "--gradebook",
                 str(tmp_path / "g.sqlite"), "--csv", str(tmp_path / "g.csv"), "--long",
                 str(tmp_path / "l.csv"), "--feedback", str(tmp_path / "fb"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "fb" / "alice" / "hw1.md").is_file()
    assert (tmp_path / "fb" / "alice" / "hw1.html").is_file()

def test_check_of_a_notebook_naming_an_unknown_homework_is_a_usage_error(tmp_path):
    nb = write_notebook(tmp_path / "hw1" / "hw1.ipynb", "x = 1")
    data = nbformat.read(nb, as_version=4)
    data.metadata["nncourse"] = {"assignment": "hw9"}
    nbformat.write(data, nb)
    result = run("check", str(nb), "--course", str(REPO / "course.toml"))
    assert result.exit_code == 2 and "'hw9'" in result.output


@pytest.mark.kernel
def test_check_knows_a_released_notebook_saved_anywhere(tmp_path):
    # A student's ~/Downloads/hw1.ipynb was refused as "no assignment 'Downloads'".
    downloads = tmp_path / "Downloads"
    downloads.mkdir()
    shutil.copy(REPO / "assignments" / "hw1" / "hw1.ipynb", downloads / "hw1 (1).ipynb")
    result = run("check", str(downloads / "hw1 (1).ipynb"), "--course", str(REPO / "course.toml"))
    assert result.exit_code == 1, result.output  # the untouched template fails its checks
    assert "public checks of hw1" in result.output
    assert "FAIL" in result.output and "failed" in result.output
