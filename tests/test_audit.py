"""Tests for grader/tools/audit.py and `grader audit`: a small real audit of homework 1 (a few
seeds, a few mutants, a mutant known to be wrong), an audit of a tiny homework of two functions
(every part, and the exit status of the command), and the equivalents file's rules.

The audit reads `solutions/hw1/audit_equivalent.toml`; the tests write theirs into a copy of the
course in tmp_path, never into the source tree.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import REPO, write_notebook

from grader.cli.main import main
from grader.course.config import Course, load_course
from grader.ship.student_notebooks import release_notebooks
from grader.tools.audit import (
    EQUIVALENT_FILE,
    AuditConfigError,
    Options,
    audit,
    drawn_mutants,
    list_mutants,
    load_equivalents,
)


def _course_copy(root: Path, assignments: tuple[str, ...] = ("hw1",)) -> Course:
    """The repository's course.toml with the given homeworks' solutions and assignments."""
    shutil.copy(REPO / "course.toml", root / "course.toml")
    for hw in assignments:
        shutil.copytree(REPO / "solutions" / hw, root / "solutions" / hw,
                        ignore=shutil.ignore_patterns("__pycache__", EQUIVALENT_FILE))
        shutil.copytree(REPO / "assignments" / hw, root / "assignments" / hw,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return load_course(root / "course.toml")


def _flops_mutant(course: Course) -> str:
    """The id of the mutant `return 2 * macs` -> `return macs` of `flops` (FLOPs reported as
    MACs): wrong on every input."""
    [found] = [m.id for m in list_mutants(course, "hw1")
               if m.function == "flops" and m.operator == "drop" and m.new == "macs"]
    return found


@pytest.fixture
def course(tmp_path: Path) -> Course:
    return _course_copy(tmp_path)


# A homework of two functions, graded as homework 1 of the course: what the audit does does not
# depend on the homework's size, and this one grades in a second. Its files are the blocks of
# docs/checks.md's "A whole homework in four files", so that page shows what works.


def _documented_files() -> dict[str, str]:
    """docs/checks.md's code blocks that name their file on their first line: path -> text."""
    found = {}
    for block in (REPO / "docs" / "checks.md").read_text(encoding="utf-8").split("```python\n")[1:]:
        text = block.split("```", 1)[0]
        first, _, rest = text.partition("\n")
        if first.startswith("# file: "):
            found[first.removeprefix("# file: ").split(" (")[0]] = rest
    return found


DOCUMENTED = _documented_files()
TINY_REFERENCE = DOCUMENTED["solutions/hw1/hw1.ipynb"]
TINY_HIDDEN = DOCUMENTED["solutions/hw1/checks/test_hw1.py"]
TINY_PUBLIC = DOCUMENTED["assignments/hw1/checks/test_hw1_public.py"]
TINY_CONSTANTS = DOCUMENTED["solutions/hw1/audit_constants.py"]


def test_the_documented_homework_has_its_four_files():
    assert sorted(DOCUMENTED) == ["assignments/hw1/checks/test_hw1_public.py",
                                 "solutions/hw1/audit_constants.py",
                                 "solutions/hw1/checks/test_hw1.py",
                                 "solutions/hw1/hw1.ipynb"]


@pytest.fixture
def tiny(tmp_path: Path) -> Course:
    """The course with the tiny homework as hw1: reference, hidden and public checks, the
    constants version, and the template made from the reference."""
    shutil.copy(REPO / "course.toml", tmp_path / "course.toml")
    solutions = tmp_path / "solutions" / "hw1"
    write_notebook(solutions / "hw1.ipynb", TINY_REFERENCE, "assert flops(3) == 6")
    (solutions / "checks").mkdir()
    (solutions / "checks" / "test_hw1.py").write_text(TINY_HIDDEN)
    (solutions / "audit_constants.py").write_text(TINY_CONSTANTS)
    (tmp_path / "assignments" / "hw1" / "checks").mkdir(parents=True)
    (tmp_path / "assignments" / "hw1" / "checks" / "test_hw1_public.py").write_text(TINY_PUBLIC)
    course = load_course(tmp_path / "course.toml")
    release_notebooks(course)
    return course


def _equivalents(course: Course, text: str) -> Path:
    path = course.hidden_checks("hw1").parent / EQUIVALENT_FILE
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.kernel
def test_a_small_audit_of_homework_1(course):
    wrong = _flops_mutant(course)
    every = list_mutants(course, "hw1")
    equivalent = next(m for m in every if m.function == "measure_latency")
    _equivalents(course, f'[equivalent.{equivalent.id}]\nreason = "reviewed in a test"\n'
                         '[equivalent.gone-00000000]\nreason = "a mutant that no longer exists"\n')
    options = Options(seed=11, seeds=3, slow_seeds=1, parts=("seeds", "mutants"),
                      mutant_ids=(wrong, equivalent.id))
    lines: list[str] = []
    report = audit(course, ["hw1"], options, lines.append)
    [hw] = report.homeworks

    assert hw.seeds is not None and hw.seeds.losses == ()  # the reference lost nothing
    assert (hw.seeds.first_seed, hw.seeds.seeds, hw.seeds.full_seeds) == (11, 3, 1)
    assert set(hw.seeds.fast_checks) | set(hw.seeds.slow_checks)

    m = hw.mutants
    assert m is not None and m.enumerated == len(every)
    verdicts = {r.id: r.verdict for r in m.results}
    assert verdicts[wrong] == "killed"
    assert verdicts[equivalent.id] == "equivalent"
    assert (m.count("killed"), m.count("equivalent"), len(m.results)) == (1, 1, 2)
    assert m.kill_rate == 100.0
    assert m.stale == ("gone-00000000",)
    killed = next(r for r in m.results if r.id == wrong)
    assert killed.earned < killed.possible and "test_hw1::" in killed.how
    assert "-    return 2 * macs" in killed.diff and "+    return macs" in killed.diff

    assert hw.template is None and hw.constants is None  # parts not asked for

    assert any("seeds 3/3" in line for line in lines)
    assert any("mutant 1/1 " in line for line in lines)
    data = json.loads(report.to_json())
    assert data["homeworks"][0]["mutants"]["killed"] == m.count("killed")
    assert data["ok"] == report.ok == (m.count("survived") == 0)


def test_an_equivalent_without_a_reason_is_a_config_error_naming_file_and_id(course):
    path = _equivalents(course, '[equivalent.flops-12345678]\nchange = "x"\n')
    with pytest.raises(AuditConfigError) as info:
        audit(course, ["hw1"], Options(parts=("mutants",)))
    assert str(path) in str(info.value) and "equivalent.flops-12345678.reason" in str(info.value)


@pytest.mark.parametrize("text, problem", [
    ('[equivalent.a-1]\nreason = "  "\n', "equivalent.a-1.reason: missing"),
    ('[equivalent.a-1]\nreason = "ok"\nreviewer = "me"\n', "equivalent.a-1.reviewer: unknown"),
    ('[equivalents.a-1]\nreason = "ok"\n', "equivalents: unknown key"),
    ("[equivalent.a-1\n", "cannot read it"),
    ('equivalent = 3\n', "expected tables"),
])
def test_a_malformed_equivalents_file_names_file_and_problem(tmp_path, text, problem):
    path = tmp_path / EQUIVALENT_FILE
    path.write_text(text, encoding="utf-8")
    with pytest.raises(AuditConfigError) as info:
        load_equivalents(path)
    assert str(path) in str(info.value) and problem in str(info.value)


def test_equivalents_load_with_their_reasons(tmp_path):
    path = tmp_path / EQUIVALENT_FILE
    path.write_text('[equivalent.f-1]\nreason = " a default "\nchange = "1 -> 2"\n',
                    encoding="utf-8")
    assert load_equivalents(path) == {"f-1": "a default"}
    assert load_equivalents(tmp_path / "missing.toml") == {}


def test_an_unknown_mutant_id_is_a_config_error(course):
    with pytest.raises(AuditConfigError, match="no mutant 'flops-nothere'"):
        audit(course, ["hw1"], Options(parts=("mutants",), mutant_ids=("flops-nothere",)))


def test_the_draw_depends_on_the_mutant_seed_only(course):
    one = drawn_mutants(course, "hw1", Options(mutants=5, mutant_seed=3, seed=1))
    two = drawn_mutants(course, "hw1", Options(mutants=5, mutant_seed=3, seed=2))
    other = drawn_mutants(course, "hw1", Options(mutants=5, mutant_seed=4, seed=1))
    assert [m.id for m in one] == [m.id for m in two] != [m.id for m in other]
    assert len(one) == 5


@pytest.mark.parametrize("args, words", [
    (["hw9"], "hw9"),
    (["hw1", "--only", "everything"], "everything"),
    (["hw1", "--mutant", "flops-nothere"], "flops-nothere"),
])
def test_cli_usage_and_config_errors_exit_2(course, args, words):
    result = CliRunner().invoke(main, ["audit", *args, "--course", str(course.path)])
    assert result.exit_code == 2 and words in result.output


def test_cli_lists_the_mutants_without_running_anything(course):
    result = CliRunner().invoke(main, ["audit", "hw1", "--list-mutants", "--course",
                                       str(course.path)])
    assert result.exit_code == 0
    assert _flops_mutant(course) in result.output
    assert len(result.output.splitlines()) == len(list_mutants(course, "hw1"))


@pytest.mark.kernel
def test_an_audit_of_a_tiny_homework_exits_1_under_the_kill_rate(tiny, tmp_path):
    """Every part, through the command: the reference keeps its points, the wrong mutant is
    killed, the symmetric one survives (50 %: exit 1), the template earns 0 and the constants
    fail the hidden checks; the JSON says all of it."""
    out = tmp_path / "report" / "audit.json"
    # min(a, b) -> min(b, a): a mutant no check can kill, not listed as equivalent here
    [symmetric] = [m.id for m in list_mutants(tiny, "hw1")
                   if m.function == "roofline" and m.operator == "args"]
    result = CliRunner().invoke(main, [
        "audit", "hw1", "--mutant", _flops_mutant(tiny), "--mutant", symmetric, "--jobs", "2",
        "--seed", "5", "--seeds", "20", "--slow-seeds", "2", "--json", str(out), "--course",
        str(tiny.path)])
    assert result.exit_code == 1, result.output
    data = json.loads(out.read_text())["homeworks"][0]
    assert (data["mutants"]["killed"], data["mutants"]["survived"]) == (1, 1)
    assert data["mutants"]["kill_rate"] == 50.0
    assert [r["id"] for r in data["mutants"]["results"] if r["verdict"] == "survived"] \
        == [symmetric]
    assert [p for p in data["problems"] if "kill rate" in p] == [
        f"kill rate 50.0 % is under {tiny.audit.min_kill_rate:g} %"]
    assert data["seeds"]["seeds"] == 20 and data["seeds"]["losses"] == []
    assert data["template"]["earned"] == 0 < data["template"]["possible"] == 2
    assert data["constants"]["earned"] == 0 < data["constants"]["public_earned"]
    assert len(data["problems"]) == 1  # nothing else failed
