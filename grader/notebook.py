"""Reading a submitted notebook: a file that is not a valid Python notebook is refused with a
reason a student can act on (it becomes the row's ``malformed`` status, never an exception out
of the grader)."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import nbformat
from nbformat.reader import NotJSONError


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
