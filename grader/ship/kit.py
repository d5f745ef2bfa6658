"""The student kit: a solution-free folder (and optionally one zip) that students download.

Layout of a kit written to ``OUT``::

    README.md, Makefile, pyproject.toml, course.toml   generated (grader/ship/kit_text.py)
    grader/                                            the engine that `grader check` runs
    assignments/nncourse/                              the course kit, weights included
    assignments/<id>/<notebook>, assignments/<id>/checks/   each released homework

The kit is built in memory, scanned for secrets (grader/tools/leaks.py), and only then written: a
kit that would leak is never written. Output is deterministic: the same course gives the same
bytes, the zip included (sorted entries, fixed times and modes).

Public: ``Kit``, ``KitError``, ``LeakError``, ``released``, ``choose``, ``kit_files``,
``write_kit``.
"""

from __future__ import annotations

import ast
import datetime as dt
import io
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nbformat

from grader.course.config import Course
from grader.errors import ConfigError, KitError, LeakError, ReleaseError
from grader.ship import kit_text
from grader.ship.student_notebooks import render, student_version
from grader.tools.leaks import course_secrets, scan

ENGINE = Path(__file__).resolve().parents[1]  # grader/
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can say: no build time in the archive


@dataclass(frozen=True)
class Kit:
    """What ``write_kit`` wrote."""

    folder: Path
    archive: Path | None
    assignments: tuple[str, ...]
    files: int


def released(course: Course, today: dt.date) -> tuple[str, ...]:
    """The homework given out by ``today`` (a date in the course's zone): those whose lecture
    day has come. The caller reads the clock; this function never does."""
    return tuple(a.id for a in course.assignments if a.lecture_day <= today)


def _missing(course: Course, assignment: str) -> str:
    """Why ``assignment`` cannot go into a kit, or "" when it can."""
    notebook, checks = course.student_notebook(assignment), course.public_checks(assignment)
    if not notebook.is_file():
        return f"{assignment}: no student notebook at {notebook}"
    if not any(checks.glob("test_*.py")):
        return f"{assignment}: no public checks (test_*.py) in {checks}"
    return ""


def choose(course: Course, requested: Sequence[str], every: bool, today: dt.date
           ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The homework to release, and messages for those left out.

    ``requested`` ids must all be releasable (else KitError). Otherwise ``every`` takes every
    homework, or the default those released by ``today``; there a homework with no student
    notebook or no public checks yet is left out with a message.
    """
    if requested and every:
        raise KitError("name homework with --assignment or take them all with --all, not both")
    if requested:
        for assignment in requested:
            try:
                course.assignment(assignment)
            except ConfigError as exc:
                raise KitError(str(exc)) from None
            if problem := _missing(course, assignment):
                raise KitError(problem)
        return tuple(dict.fromkeys(requested)), ()
    candidates = [a.id for a in course.assignments] if every else released(course, today)
    chosen = tuple(a for a in candidates if not _missing(course, a))
    skipped = tuple(f"left out {problem}" for a in candidates if (problem := _missing(course, a)))
    if not chosen:
        first = min(a.lecture_day for a in course.assignments)
        why = "none is ready" if candidates else f"the first lecture is on {first}"
        raise KitError(f"no homework to release by {today} ({why}); name one with --assignment "
                       f"or take every one with --all")
    return chosen, skipped


def plain_files(folder: Path, suffixes: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file under ``folder`` (with one of ``suffixes``, when given) by relative path,
    caches left out; a symbolic link is refused (a kit or a bundle holds plain files only)."""
    files: dict[str, bytes] = {}
    for path in sorted(folder.rglob("*")):
        if "__pycache__" in path.parts or ".ipynb_checkpoints" in path.parts:
            continue
        if path.is_symlink():
            raise KitError(f"{path}: a symbolic link; the kit holds plain files only")
        if path.is_file() and (not suffixes or path.suffix in suffixes):
            files[path.relative_to(folder).as_posix()] = path.read_bytes()
    return files


def _notebook(course: Course, assignment: str) -> bytes:
    """The committed student notebook, refused when it has drifted from its reference."""
    path = course.student_notebook(assignment)
    text = path.read_text(encoding="utf-8")
    reference = course.reference_notebook(assignment)
    if reference.exists():
        try:
            fresh = render(student_version(nbformat.read(reference, as_version=4),
                                           str(reference), assignment))
        except ReleaseError as exc:
            raise KitError(str(exc)) from None
        if fresh != text:
            raise KitError(f"{path} is out of date with {reference}; run `grader "
                           f"release-notebooks` first")
    return text.encode("utf-8")


# What a student's `grader check` needs: the command and what it imports, the library the
# public checks import, the kernel's end of the protocol (copied into the sandbox), pytest's
# settings for the checks. Nothing of the instructor's commands (grader/cli/instructor.py and
# all it alone imports).
ENTRY_MODULES = ("grader.cli.main", "grader.checks")


def _module_file(name: str) -> Path | None:
    """The file of the engine's module ``name`` (``grader.x.y``): a module or a package."""
    relative = name.split(".", 1)[1].replace(".", "/") if "." in name else ""
    for path in (ENGINE / f"{relative}.py", ENGINE / relative / "__init__.py"):
        if relative and path.is_file():
            return path
    return ENGINE / "__init__.py" if not relative else None


def engine_files() -> list[str]:
    """The engine's files the kit ships (paths relative to grader/): the modules that the
    entry modules import (by an import statement, in a function too), followed transitively,
    the packages that hold them, grader/kernel/bridge/ and the checks' pytest settings. The
    instructor's commands, loaded by name on demand, are not shipped."""
    wanted = {"__init__.py", "pipeline/checks_pytest.ini"}
    bridge = ENGINE / "kernel" / "bridge"
    wanted |= {p.relative_to(ENGINE).as_posix() for p in bridge.glob("*.py")}
    todo = list(ENTRY_MODULES)
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in seen or path is None:
            continue
        seen.add(name)
        wanted.add(path.relative_to(ENGINE).as_posix())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                todo += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                todo += [a.name for a in node.names]
        todo = [t for t in todo if t.startswith("grader.")]
    # every folder of a shipped module is a package the kit installs: its __init__.py too
    for relative in list(wanted):
        for parent in Path(relative).parents:
            if parent != Path("."):
                wanted.add((parent / "__init__.py").as_posix())
    return sorted(wanted)


def engine_packages(files: Iterable[str]) -> list[str]:
    """The packages (``grader``, ``grader.kernel``, ...) that hold the shipped engine files."""
    return sorted({"grader", *("grader." + str(Path(f).parent).replace("/", ".")
                               for f in files if f.endswith("/__init__.py"))})


def kit_files(course: Course, assignments: Sequence[str]) -> dict[str, bytes]:
    """Every file of the kit for ``assignments``, by relative path, in sorted order."""
    if not assignments:
        raise KitError("no homework to put in the kit")
    kit = course.root / "assignments" / "nncourse"
    if not (kit / "__init__.py").is_file():
        raise KitError(f"{kit}: the course kit nncourse is missing")
    files = {
        "README.md": kit_text.readme(course, assignments).encode(),
        "Makefile": kit_text.makefile(course, assignments).encode(),
        "pyproject.toml": b"",  # below, from what the kit's files import
        "course.toml": kit_text.course_toml(course, assignments).encode(),
        ".gitignore": b".venv/\n*.egg-info/\n__pycache__/\n.ipynb_checkpoints/\n",
    }
    files.update({f"grader/{k}": (ENGINE / k).read_bytes() for k in engine_files()})
    files.update({f"assignments/nncourse/{k}": v
                  for k, v in plain_files(kit, (".py", ".pt")).items()})
    for a in assignments:
        files[f"assignments/{a}/{course.assignment(a).notebook}"] = _notebook(course, a)
        checks = plain_files(course.public_checks(a), (".py",))
        files.update({f"assignments/{a}/checks/{k}": v for k, v in checks.items()})
    files["pyproject.toml"] = kit_text.pyproject(engine_packages(engine_files()),
                                                 kit_text.requirements(files)).encode()
    return dict(sorted(files.items()))


def _zip(files: dict[str, bytes], top: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(f"{top}/{name}", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, so that the mode below is read
            info.external_attr = 0o100644 << 16
            archive.writestr(info, data, compresslevel=9)
    return buffer.getvalue()


def _is_kit(folder: Path) -> bool:
    pyproject = folder / "pyproject.toml"
    return pyproject.is_file() and f'name = "{kit_text.KIT_DISTRIBUTION}"' in pyproject.read_text(
        encoding="utf-8", errors="replace")


def _check_target(course: Course, out: Path, archive: Path | None, replace: bool) -> None:
    if course.root.resolve().is_relative_to(out.resolve()):
        raise KitError(f"{out}: the kit cannot be written over the course itself")
    if out.exists() and not out.is_dir():
        raise KitError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not replace:
            raise KitError(f"{out}: exists and is not empty; choose another folder, or pass "
                           f"--force to replace an earlier kit")
        if not _is_kit(out):
            raise KitError(f"{out}: is not a kit that grader release wrote; not replacing it")
    if archive is not None and archive.exists() and not replace:
        raise KitError(f"{archive}: exists; pass --force to replace it")


def write_kit(course: Course, out: Path, assignments: Sequence[str], archive: bool = False,
              replace: bool = False) -> Kit:
    """Build the kit for ``assignments``, scan it, and write it to the folder ``out`` (and,
    with ``archive``, to ``out`` + ".zip", whose entries sit in a folder named like ``out``).

    An existing, non-empty ``out`` (or zip) is an error unless ``replace``, and even then only
    an earlier kit is replaced. Raise LeakError, writing nothing, if the kit holds a secret.
    """
    out = Path(out)
    zip_path = out.parent / f"{out.name}.zip" if archive else None
    _check_target(course, out, zip_path, replace)
    files = kit_files(course, assignments)
    packed = _zip(files, out.name) if zip_path is not None else None
    # The zip holds the same bytes under the same names below one folder, so scanning the
    # files (and that folder's name) covers it too.
    leaks = scan({**files, out.name: b""}, course_secrets(course, assignments))
    if leaks:
        raise LeakError(leaks)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the kit is to be shared
    try:
        for name, data in files.items():
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if packed is not None and zip_path is not None:
        partial = zip_path.with_name(f".{zip_path.name}.partial")
        partial.write_bytes(packed)
        os.replace(partial, zip_path)
    return Kit(out, zip_path, tuple(assignments), len(files))
