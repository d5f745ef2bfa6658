"""The benchmark's homework: trivial on purpose, so that what is measured is the grading.

One notebook: a cell that imports torch, two functions (a count and a tensor statistic), a cell
of 5 asserts; two hidden checks that call the functions on drawn inputs. The same work is
written for each grader: pytest checks with the ``student`` fixture for this one, hidden test
cells for nbgrader, exception-based test files for otter-grader. Each check's body (draw, call,
compare) is one text, used as it is by all three, so no grader gets an easier check.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import nbformat

ASSIGNMENT = "hw"
NOTEBOOK = "hw.ipynb"
SEED = 20261103  # nbgrader and otter draw with a fixed seed; this grader draws per run

IMPORTS = "import torch\n\ntorch.set_num_threads(1)"

# Two correct ways to write each function; students alternate, so the submissions differ.
LINEAR_PARAMS = (
    "return n_in * n_out + (n_out if bias else 0)",
    "return n_out * (n_in + int(bias))",
)
SPARSITY = (
    "return float((t == 0).sum()) / t.numel()",
    "return (t == 0).float().mean().item()",
)

PUBLIC_ASSERTS = """\
assert linear_params(3, 4) == 16
assert linear_params(3, 4, bias=False) == 12
assert linear_params(1, 1) == 2
assert sparsity(torch.tensor([0.0, 1.0])) == 0.5
assert sparsity(torch.zeros(3)) == 1.0"""


@dataclass(frozen=True)
class Check:
    """A hidden check: its name, its points, the function it calls and its body (which
    uses ``rng`` (random.Random), ``torch_rng`` (torch.Generator) and the function by name)."""

    name: str
    points: int
    function: str
    doc: str
    body: str


CHECKS = (
    Check("linear_params", 1, "linear_params",
          "nn.Linear(n_in, n_out) has n_in * n_out weights, and n_out biases when bias=True.",
          """\
n_out, bias = rng.randrange(1, 1000), rng.random() < 0.5
for n_in in rng.sample(range(1, 1000), 2):  # two different answers: no constant passes both
    expected = n_in * n_out + (n_out if bias else 0)
    got = linear_params(n_in, n_out, bias=bias)
    assert got == expected, f"linear_params({n_in}, {n_out}, {bias}): {expected}, not {got}"
"""),
    Check("sparsity", 1, "sparsity",
          "The fraction of zero entries of a tensor (a float in [0, 1]).",
          """\
numel = rng.randrange(10, 500)
for zeros in rng.sample(range(1, numel), 2):  # two different answers: no constant passes both
    t = torch.rand(numel, generator=torch_rng) + 0.5
    t[torch.randperm(numel, generator=torch_rng)[:zeros]] = 0.0
    got = sparsity(t)
    assert abs(got - zeros / numel) < 1e-6, f"{zeros} zeros in {numel}: {zeros / numel}, not {got}"
"""),
)


def function_cells(variant: int, student: str) -> list[str]:
    """The two function cells of a student's notebook (``variant`` picks how they are
    written; every variant is correct)."""
    return [
        f"# {student}\ndef linear_params(n_in, n_out, bias=True):\n"
        f'    """Parameters of nn.Linear(n_in, n_out, bias)."""\n'
        f"    {LINEAR_PARAMS[variant % 2]}",
        "def sparsity(t):\n"
        '    """The fraction of zero entries of tensor t, a float in [0, 1]."""\n'
        f"    {SPARSITY[(variant // 2) % 2]}",
    ]


def _notebook(cells: list[nbformat.NotebookNode]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# Benchmark homework"), *cells]
    return nb


def submission(variant: int, student: str) -> nbformat.NotebookNode:
    """A student's notebook as this grader, otter and a bare run get it (all correct)."""
    code = [IMPORTS, *function_cells(variant, student), PUBLIC_ASSERTS]
    return _notebook([nbformat.v4.new_code_cell(c) for c in code])


def students(n: int) -> list[str]:
    """The ids of ``n`` students."""
    return [f"s{i:03d}" for i in range(n)]


def write_submissions(root: Path, n: int) -> list[Path]:
    """``root/<student>/hw/hw.ipynb`` for ``n`` students (this grader's and nbgrader's layout,
    with a timestamp beside each); returns the notebooks."""
    paths = []
    for i, student in enumerate(students(n)):
        path = root / student / ASSIGNMENT / NOTEBOOK
        path.parent.mkdir(parents=True)
        nbformat.write(submission(i, student), path)
        (path.parent / "timestamp.txt").write_text("2026-11-04 10:00:00 Europe/Moscow")
        paths.append(path)
    return paths


# --- this grader --------------------------------------------------------------------------

COURSE_TOML = """\
[course]
name = "Benchmark course"
timezone = "Europe/Moscow"
last_lecture_day = 2026-12-08

[limits]
sandbox = "{sandbox}"

[[assignment]]
id = "{assignment}"
title = "Benchmark homework"
lecture_day = 2026-11-03
notebook = "{notebook}"
"""


def pytest_checks() -> str:
    """The hidden checks as a pytest file for this grader (docs/checks.md)."""
    parts = ['"""Hidden checks of the benchmark homework."""\n\nimport functools\n\n'
             "import pytest\nimport torch\n"]
    for check in CHECKS:
        parts.append(
            f"\n\n@pytest.mark.points({check.points})\n"
            f"def test_{check.name}(student, rng, torch_rng):\n"
            f'    """{check.doc}"""\n'
            f"    {check.function} = functools.partial(student.call, {check.function!r})\n"
            + textwrap.indent(check.body, "    "))
    return "".join(parts)


def write_course(root: Path, sandbox: str) -> Path:
    """A course folder for this grader (course.toml, the hidden checks); returns course.toml."""
    checks = root / "solutions" / ASSIGNMENT / "checks"
    checks.mkdir(parents=True)
    (checks / f"test_{ASSIGNMENT}.py").write_text(pytest_checks())
    course = root / "course.toml"
    course.write_text(COURSE_TOML.format(sandbox=sandbox, assignment=ASSIGNMENT,
                                         notebook=NOTEBOOK))
    return course


# --- nbgrader -----------------------------------------------------------------------------

def _nbgrader_meta(grade_id: str, *, solution: bool, grade: bool, points: int = 0) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": not solution, "schema_version": 3,
            "solution": solution, "task": False}
    if grade:
        meta["points"] = points
    return {"nbgrader": meta}


def _hidden_cell(check: Check) -> str:
    # the same body, in the kernel, with the draws seeded by the test itself
    return ("### BEGIN HIDDEN TESTS\n"
            f"def _check_{check.name}(rng, torch_rng):\n"
            + textwrap.indent(check.body, "    ")
            + f"_check_{check.name}(__import__('random').Random({SEED}), "
              f"torch.Generator().manual_seed({SEED}))\n"
            "### END HIDDEN TESTS")


def nbgrader_source() -> nbformat.NotebookNode:
    """The instructor's notebook for ``nbgrader generate_assignment``: solution cells, and one
    autograder test cell per check whose body is hidden from students."""
    imports, *functions = [IMPORTS, *function_cells(0, "solution")]
    cells = [nbformat.v4.new_code_cell(imports)]
    for check, source in zip(CHECKS, functions, strict=True):
        head, _, body = source.rpartition("\n")
        cells.append(nbformat.v4.new_code_cell(
            f"{head}\n    ### BEGIN SOLUTION\n{body}\n    ### END SOLUTION",
            metadata=_nbgrader_meta(check.function, solution=True, grade=False)))
    cells.append(nbformat.v4.new_code_cell(PUBLIC_ASSERTS))
    for check in CHECKS:
        cells.append(nbformat.v4.new_code_cell(
            _hidden_cell(check),
            metadata=_nbgrader_meta(f"test_{check.name}", solution=False, grade=True,
                                    points=check.points)))
    return _notebook(cells)


def nbgrader_submission(release: nbformat.NotebookNode, variant: int,
                        student: str) -> nbformat.NotebookNode:
    """The released notebook with the student's functions written into its solution cells."""
    nb = nbformat.from_dict(release)
    answers = iter(function_cells(variant, student))
    for cell in nb.cells:
        if cell.get("metadata", {}).get("nbgrader", {}).get("solution"):
            cell.source = next(answers)
    return nb


# --- otter-grader -------------------------------------------------------------------------

def otter_test_file(check: Check) -> str:
    """One check as an otter exception-based test file (its argument is taken from the
    notebook's globals by name)."""
    return (f'"""{check.doc}"""\n\nimport random\n\nimport torch\n'
            "from otter.test_files import test_case\n\n"
            f"OK_FORMAT = False\nname = {check.name!r}\npoints = {check.points}\n\n\n"
            "@test_case(hidden=True)\n"
            f"def test_{check.name}({check.function}):\n"
            f"    rng, torch_rng = random.Random({SEED}), torch.Generator().manual_seed({SEED})\n"
            + textwrap.indent(check.body, "    "))
