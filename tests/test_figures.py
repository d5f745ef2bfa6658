"""The figures of the homework notebooks: ungraded cells that reach the notebook as small PNGs.

A figure cell is a code cell that uses matplotlib. It holds no solution region and defines none
of the graded functions, so the student version has exactly the reference's figure cells, and a
figure never stands between a student and a point: with the solution regions stubbed, a figure
cell either still draws or fails with the NotImplementedError the student sees anyway.

The grader's kernel runs with MPLBACKEND=Agg (grader/pipeline/execute.py), under which `plt.show()`
displays nothing; the first figure cell of a notebook selects the inline backend, which turns
each figure into an image/png output and closes it.
"""

from __future__ import annotations

import base64
import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nbformat
import pytest
from conftest import REPO

import grader.pipeline.execute as execute_module
from grader.kernel.protocol import Student
from grader.pipeline.execute import execute
from grader.records import Execution, Limits, Status

REFERENCES = sorted(REPO.glob("solutions/hw*/hw*.ipynb"))
TEMPLATES = sorted(REPO.glob("assignments/hw*/hw*.ipynb"))
FIGURE = re.compile(r"\bplt\.|\bmatplotlib\b")
MATPLOTLIB_IMPORT = re.compile(r"^\s*(import|from) matplotlib\b", re.MULTILINE)
DEFINITION = re.compile(r"^\s*(?:def|class)\s+(\w+)", re.MULTILINE)
SOLUTION = "### BEGIN SOLUTION"
# what a figure may cost in the notebook: the grader keeps max_output_chars (100,000) per cell
MAX_PNG_CHARS = 40_000
MAX_PNG_PIXELS = (500, 300)  # 6 x 3.5 inches at 80 dpi, plus what a tight bounding box adds
LIMITS = Limits(cell_timeout_s=120, notebook_timeout_s=300, call_timeout_s=60)


def _code_cells(path: Path) -> list[nbformat.NotebookNode]:
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def _is_figure(cell: nbformat.NotebookNode) -> bool:
    return cell.cell_type == "code" and FIGURE.search(cell.source) is not None


def _figure_cells(cells: list[nbformat.NotebookNode]) -> list[nbformat.NotebookNode]:
    return [c for c in cells if _is_figure(c)]


def _graded_names(path: Path) -> set[str]:
    """The functions and classes the student writes: those defined in cells with a solution
    region (the hidden checks call them)."""
    return {name for c in _code_cells(path) if SOLUTION in c.source
            for name in DEFINITION.findall(c.source)}


@pytest.mark.parametrize("path", REFERENCES, ids=lambda p: p.parent.name)
def test_every_homework_has_figures_and_they_are_ungraded(path):
    figures = _figure_cells(_code_cells(path))
    assert figures, f"{path.parent.name} has no figure"
    graded = _graded_names(path)
    for cell in figures:
        assert SOLUTION not in cell.source, f"a solution region in figure cell {cell.id}"
        defined = set(DEFINITION.findall(cell.source)) & graded
        assert not defined, f"figure cell {cell.id} defines graded code: {sorted(defined)}"


@pytest.mark.parametrize("path", REFERENCES, ids=lambda p: p.parent.name)
def test_matplotlib_is_set_up_in_the_first_figure_cell_and_only_in_ungraded_cells(path):
    cells = _code_cells(path)
    importing = [c for c in cells if MATPLOTLIB_IMPORT.search(c.source)]
    assert all(SOLUTION not in c.source for c in importing)
    first = _figure_cells(cells)[0]
    assert MATPLOTLIB_IMPORT.search(first.source), f"{first.id} uses matplotlib unimported"
    # under the grader's MPLBACKEND=Agg only the inline backend puts figures in the notebook
    assert first.source.startswith("%matplotlib inline\n"), first.id


@pytest.mark.parametrize("path", REFERENCES, ids=lambda p: p.parent.name)
def test_each_figure_comes_after_a_sentence_saying_what_to_look_at_and_stands_alone(path):
    cells = nbformat.read(path, as_version=4).cells
    for i, cell in enumerate(cells):
        if _is_figure(cell):
            before = cells[i - 1]
            assert before.cell_type == "markdown" and before.source.strip(), cell.id
            drawn = cell.source.count("plt.subplots(") + cell.source.count("plt.figure(")
            assert drawn == 1 and cell.source.count("plt.show()") == 1, cell.id


@contextmanager
def _executed(path: Path) -> Iterator[tuple[Execution, object, list]]:
    """grader.pipeline.execute.execute on `path`, also yielding the executed notebook's cells
    (the engine keeps them to itself; a spy on its notebook reader hands them over)."""
    seen: dict[str, nbformat.NotebookNode] = {}
    read = execute_module.read_notebook

    def keep(notebook_path: Path, max_mb: float = 0) -> nbformat.NotebookNode:
        seen["nb"] = read(notebook_path, max_mb)
        return seen["nb"]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(execute_module, "read_notebook", keep)
        with execute(path, LIMITS) as (execution, session):
            yield execution, session, seen["nb"].cells


def _pngs(cell: nbformat.NotebookNode) -> list[bytes]:
    return [base64.b64decode(o.data["image/png"]) for o in cell.get("outputs", [])
            if o.output_type in ("display_data", "execute_result") and "image/png" in o.data]


def _open_figures() -> list[int]:
    """Run in the kernel: the figures matplotlib still holds open."""
    import matplotlib.pyplot as plt

    return plt.get_fignums()


@pytest.mark.kernel
def test_the_figures_reach_the_graded_notebook_as_small_pngs_and_are_closed():
    """One reference notebook under the grader's own execution (sandbox, MPLBACKEND=Agg,
    output limits): every figure cell leaves exactly one small PNG and no open figure."""
    path = REPO / "solutions" / "hw6" / "hw6.ipynb"
    with _executed(path) as (execution, session, cells):
        assert execution.status is Status.OK, execution.detail
        assert not execution.output_truncated
        session.install_bridge(30)
        student = Student(session.request, LIMITS.call_timeout_s)
        open_figures = student.drive(_open_figures)
    figures = _figure_cells(cells)
    assert len(figures) >= 3
    for cell in figures:
        pngs = _pngs(cell)
        assert len(pngs) == 1, f"{cell.id}: {len(pngs)} images"
        png = pngs[0]
        assert len(base64.b64encode(png)) < MAX_PNG_CHARS, cell.id
        width, height = struct.unpack(">II", png[16:24])  # the PNG header's IHDR chunk
        assert width <= MAX_PNG_PIXELS[0] and height <= MAX_PNG_PIXELS[1], (cell.id, width, height)
    assert open_figures == []


@pytest.mark.kernel
@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.parent.name)
def test_in_the_student_version_a_figure_draws_or_waits_for_the_students_code(path):
    """With every solution region stubbed, a figure cell draws, or raises the
    NotImplementedError the student meets in the cells above it; never another error."""
    with _executed(path) as (execution, _, cells):
        assert execution.status is Status.CELL_ERROR, execution.detail
    for cell in _figure_cells(cells):
        errors = [o.ename for o in cell.outputs if o.output_type == "error"]
        assert errors == ["NotImplementedError"] or (not errors and len(_pngs(cell)) == 1), (
            cell.id, errors)
