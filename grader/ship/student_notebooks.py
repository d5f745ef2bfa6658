"""The student release: student notebooks generated from the reference notebooks.

In a reference notebook, code a student must write sits between ``### BEGIN SOLUTION`` and
``### END SOLUTION`` lines; each region becomes a stub at the same indentation. An answer cell
of a written question (``grader.course.questions``) becomes the stub whole: its reference text
is the instructor's. Outputs and execution counts are dropped. Generating is deterministic, so
a test can tell when the committed student notebook and the reference have drifted apart.
"""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat

from grader.course.config import Course
from grader.course.notebook import METADATA_KEY, solution_regions
from grader.course.questions import ANSWER_STUB, answer_cell_question
from grader.errors import ReleaseError

CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
MARKDOWN_STUB = ("YOUR ANSWER HERE",)


def strip_regions(source: str, stub: tuple[str, ...], where: str) -> str:
    """Replace every marked solution region in ``source`` by ``stub`` lines, indented like the
    BEGIN marker."""
    try:
        found = solution_regions(source, where)
    except ValueError as exc:
        raise ReleaseError(str(exc)) from None
    lines = source.splitlines()
    out: list[str] = []
    done = 0  # lines of ``source`` already handled
    for region in found:
        out += lines[done:region.begin - 1]
        marker = lines[region.begin - 1]
        indent = marker[:len(marker) - len(marker.lstrip())]
        out += [indent + s for s in stub]
        done = region.end
    out += lines[done:]
    return "\n".join(out)


def student_version(reference: nbformat.NotebookNode, name: str,
                    assignment: str | None = None) -> nbformat.NotebookNode:
    """The student notebook made from ``reference`` (which is not modified); with
    ``assignment``, its id is written into the notebook's metadata."""
    nb = copy.deepcopy(reference)
    if assignment is not None:
        nb.metadata[METADATA_KEY] = {"assignment": assignment}
    for index, cell in enumerate(nb.cells):
        where = f"{name}, cell {index + 1}"
        if cell.cell_type == "code":
            cell.source = strip_regions(cell.source, CODE_STUB, where)
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
        elif answer_cell_question(cell) is not None:
            cell.source = ANSWER_STUB
            cell.pop("attachments", None)
        elif cell.cell_type == "markdown":
            cell.source = strip_regions(cell.source, MARKDOWN_STUB, where)
    return nb


def render(nb: nbformat.NotebookNode) -> str:
    return str(nbformat.writes(nb)) + "\n"


def release_notebooks(course: Course, check_only: bool = False) -> list[Path]:
    """Regenerate ``assignments/<id>/<notebook>`` from ``solutions/`` for every assignment that
    has a reference notebook. Return the student notebooks that differed (and, unless
    ``check_only``, were rewritten)."""
    changed = []
    for a in course.assignments:
        reference_path = course.reference_notebook(a.id)
        if not reference_path.exists():
            continue
        reference = nbformat.read(reference_path, as_version=4)
        text = render(student_version(reference, str(reference_path), a.id))
        target = course.student_notebook(a.id)
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current != text:
            changed.append(target)
            if not check_only:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
    return changed


