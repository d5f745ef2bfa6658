"""Reading a submitted notebook: a file that is not a valid Python notebook is refused with a
reason a student can act on (it becomes the row's ``malformed`` status, never an exception out
of the grader)."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import nbformat
from nbformat.reader import NotJSONError

from grader.config import Course
from grader.errors import ConfigError

# Notebook metadata that names the homework: ``metadata["nncourse"] = {"assignment": "hw1"}``,
# so ``grader check`` knows the notebook wherever the student saved it.
METADATA_KEY = "nncourse"


class MalformedNotebook(ValueError):
    """The file is not a notebook the grader can run; the message says why, for the student."""


def read_notebook(path: Path) -> nbformat.NotebookNode:
    """Read and validate a notebook; raise MalformedNotebook with a student-readable reason."""
    try:
        nb = nbformat.read(path, as_version=4)
    except UnicodeDecodeError:
        raise MalformedNotebook(f"{path.name} is not a valid notebook file: not UTF-8 text") \
            from None
    except OSError as exc:
        raise MalformedNotebook(f"cannot read {path.name}: {exc.strerror or exc}") from exc
    except NotJSONError:
        raise MalformedNotebook(f"{path.name} is not a valid notebook file: not JSON (cut "
                                f"short, or edited by hand?)") from None
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else \
            type(exc).__name__
        raise MalformedNotebook(f"{path.name} is not a valid notebook file: {first}") from exc
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as exc:
        raise MalformedNotebook(f"{path.name} does not follow the notebook format: "
                                f"{str(exc).splitlines()[0]}") from exc
    language = (nb.metadata.get("kernelspec", {}).get("language")
                or nb.metadata.get("language_info", {}).get("name") or "python")
    if str(language).lower() != "python":
        raise MalformedNotebook(f"{path.name} is a {language} notebook; the course uses Python")
    if not any(cell.cell_type == "code" for cell in nb.cells):
        raise MalformedNotebook(f"{path.name} has no code cells")
    return cast(nbformat.NotebookNode, nb)  # nbformat is untyped


def first_line(source: str, width: int = 60) -> str:
    """The first line of a cell's source, cut to ``width`` characters (for messages)."""
    return source.strip().splitlines()[0][:width] if source.strip() else ""


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
