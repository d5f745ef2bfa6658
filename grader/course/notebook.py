"""Reading notebooks: a submitted file that is not a valid Python notebook is refused with a
reason a student can act on (it becomes the row's ``malformed`` status, never an exception out
of the grader); a notebook's code cells; the solution regions of a reference notebook (code a
student must write sits between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` lines)."""

from __future__ import annotations

import ast
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import nbformat
from nbformat.reader import NotJSONError

from grader.course.config import Course
from grader.errors import ConfigError, MalformedNotebook
from grader.text import first_line

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"

# Notebook metadata that names the homework: ``metadata["nncourse"] = {"assignment": "hw1"}``,
# so ``grader check`` knows the notebook wherever the student saved it.
METADATA_KEY = "nncourse"


def read_notebook(path: Path, max_mb: float = 0) -> nbformat.NotebookNode:
    """Read and validate a notebook; raise MalformedNotebook with a student-readable reason.
    A file over ``max_mb`` megabytes (0: no limit) is refused before it is read."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise MalformedNotebook(f"cannot read {path.name}: {exc.strerror or exc}") from exc
    if max_mb and size > max_mb * 2**20:
        raise MalformedNotebook(f"{path.name} is {size / 2**20:.1f} MB, more than the "
                                f"{max_mb:g} MB a notebook may be (clear its outputs, or "
                                f"save large data in files beside it)")
    try:
        text = path.read_bytes().decode("utf-8")
        data = json.loads(text)
    except UnicodeDecodeError:
        raise MalformedNotebook(f"{path.name} is not a valid notebook file: not UTF-8 text") \
            from None
    except OSError as exc:
        raise MalformedNotebook(f"cannot read {path.name}: {exc.strerror or exc}") from exc
    except (ValueError, RecursionError):
        raise MalformedNotebook(f"{path.name} is not a valid notebook file: not JSON (cut "
                                f"short, or edited by hand?)") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list) \
            or not isinstance(data.get("nbformat"), int):
        raise MalformedNotebook(f"{path.name} is JSON but not a notebook: it has no list of "
                                f"cells and no format version (save it from Jupyter as "
                                f".ipynb)")
    try:
        nb = nbformat.reads(text, as_version=4)
    except NotJSONError:
        raise MalformedNotebook(f"{path.name} is not a valid notebook file: not JSON (cut "
                                f"short, or edited by hand?)") from None
    except Exception as exc:
        first = first_line(str(exc)) or type(exc).__name__
        raise MalformedNotebook(f"{path.name} is not a valid notebook file: {first}") from exc
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as exc:
        raise MalformedNotebook(f"{path.name} does not follow the notebook format: "
                                f"{first_line(str(exc))}") from exc
    language = (nb.metadata.get("kernelspec", {}).get("language")
                or nb.metadata.get("language_info", {}).get("name") or "python")
    if str(language).lower() != "python":
        raise MalformedNotebook(f"{path.name} is a {language} notebook; the course uses Python")
    if not any(cell.cell_type == "code" for cell in nb.cells):
        raise MalformedNotebook(f"{path.name} has no code cells")
    return cast(nbformat.NotebookNode, nb)  # nbformat is untyped


def assignment_of(course: Course, path: Path, nb: nbformat.NotebookNode) -> str:
    """Which homework the notebook at ``path`` is: the id in its metadata, else the assignment
    whose notebook file has this name (``hw1.ipynb``), else its folder's name.

    Raise ConfigError when the metadata names a homework the course does not have, or when
    nothing tells.
    """
    known = ", ".join(a.id for a in course.assignments)
    tag = nb.metadata.get(METADATA_KEY)
    if tag is not None:
        claimed = tag.get("assignment") if isinstance(tag, dict) else None
        if not isinstance(claimed, str) or claimed not in {a.id for a in course.assignments}:
            raise ConfigError(f"{path}: its metadata names homework {claimed!r}, which "
                              f"{course.path} does not have (known: {known})")
        return claimed
    by_name = [a.id for a in course.assignments if a.notebook == path.name]
    if len(by_name) == 1:
        return by_name[0]
    folder = path.resolve().parent.name
    if folder in {a.id for a in course.assignments}:
        return folder
    raise ConfigError(f"{path}: cannot tell which homework this is: no homework id in its "
                      f"metadata, and neither its name {path.name!r} nor its folder {folder!r} "
                      f"is one of the course's (known: {known})")


def defined_names(path: Path) -> tuple[str, ...]:
    """The functions and classes a notebook's code cells define at the top level, in the
    notebook's order (for a student notebook: its tasks). Read once per state of the file."""
    try:
        return _defined_names(path, path.stat().st_mtime_ns)
    except OSError:
        return ()


@functools.lru_cache(maxsize=16)
def _defined_names(path: Path, state: int) -> tuple[str, ...]:
    del state  # the cache key: the file as it is now
    found: list[str] = []
    for source in code_cells(path):
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        found += [node.name for node in tree.body if isinstance(
            node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.name not in found]
    return tuple(found)


def code_cells(path: Path) -> list[str]:
    """The sources of a notebook's code cells, in order."""
    return [source for _, source in indexed_code_cells(path)]


def indexed_code_cells(path: Path) -> list[tuple[int, str]]:
    """(index among all cells, source) of a notebook's code cells."""
    cells = nbformat.read(path, as_version=4).cells
    return [(i, c.source) for i, c in enumerate(cells) if c.cell_type == "code"]


@dataclass(frozen=True)
class Region:
    """One solution region of a cell: its marker lines (1-based), ``begin`` < ``end``."""

    begin: int
    end: int


def solution_regions(source: str, where: str) -> list[Region]:
    """The solution regions of one cell's ``source``, in order. Unbalanced markers raise
    ValueError naming ``where`` (the notebook and cell) and the line."""
    found: list[Region] = []
    begin = 0
    for number, line in enumerate(source.splitlines(), start=1):
        if line.strip() == BEGIN:
            if begin:
                raise ValueError(f"{where}, line {number}: {BEGIN} inside another region")
            begin = number
        elif line.strip() == END:
            if not begin:
                raise ValueError(f"{where}, line {number}: {END} without {BEGIN}")
            found.append(Region(begin, number))
            begin = 0
    if begin:
        raise ValueError(f"{where}, line {begin}: {BEGIN} without {END}")
    return found
