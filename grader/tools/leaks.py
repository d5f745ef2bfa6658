"""What the student kit must never hold, and a scan of a kit (folder or zip) for it.

Secrets come from the instructor's side of the course: every line of every solution region of
every reference notebook and of its written questions' answer cells, the hidden checks (file
names, test names, code lines), the rubrics (every line of their text: the items' sentences,
the model answers), the example submissions (their paths, bytes and code), every file under
``solutions/``, and the roster and extensions files that course.toml names.

Two kinds of line are not secrets, and are left out:

- a line shorter than ``MIN_LINE_CHARS`` characters once stripped (``return x``, ``else:``,
  ``model.eval()``), or with fewer than ``MIN_LINE_ALNUM`` letters and digits (a markdown
  table rule): it is everyday text that a kit holds for its own reasons, and a secret that
  short is guessable from the task's docstring anyway;
- a line that the kit ships on purpose elsewhere: the code outside the solution regions of the
  released notebooks, the public checks, the course kit ``nncourse`` and the engine. These are
  read from the course's own sources, never from the kit being scanned, so a leak cannot excuse
  itself.

Public: ``Secret``, ``Leak``, ``course_secrets``, ``scan``, ``read_tree``.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import re
import tomllib
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import ahocorasick
import nbformat

from grader.course.config import Course
from grader.course.notebook import BEGIN, END
from grader.course.questions import RUBRIC_FILE, answer_cell_question

MIN_LINE_CHARS = 20
MIN_LINE_ALNUM = 10


@dataclass(frozen=True)
class Secret:
    """Something the kit must not contain, and where it comes from."""

    text: str  # a substring, a whole word (``word``), or a sha256 of a whole file (``sha256``)
    origin: str  # where it comes from: a file of the course, a cell of a reference notebook
    word: bool = False
    sha256: bool = False


@dataclass(frozen=True)
class Leak:
    """A secret found in one file of a kit (``kit.zip!kit/README.md`` for a zip member)."""

    file: str
    secret: Secret

    def __str__(self) -> str:
        what = "a copy of" if self.secret.sha256 else repr(self.secret.text[:80])
        return f"{self.file}: {what} ({self.secret.origin})"


def solution_lines(source: str) -> Iterator[str]:
    """The stripped, non-blank lines between BEGIN and END markers in ``source``."""
    inside = False
    for line in source.splitlines():
        stripped = line.strip()
        if stripped == BEGIN:
            inside = True
        elif stripped == END:
            inside = False
        elif inside and stripped:
            yield stripped


def outside_regions(source: str) -> str:
    """``source`` without its solution regions (what a student notebook keeps of it)."""
    kept, inside = [], False
    for line in source.splitlines():
        stripped = line.strip()
        if stripped in (BEGIN, END):
            inside = stripped == BEGIN
        elif not inside:
            kept.append(line)
    return "\n".join(kept)


def _files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def shipped_text(course: Course, released: Iterable[str]) -> str:
    """The text a kit of ``released`` homework ships on purpose, read from the course sources:
    the released notebooks outside their solution regions, the public checks, nncourse and the
    engine."""
    parts = []
    for assignment in released:
        reference = course.reference_notebook(assignment)
        source = reference if reference.exists() else course.student_notebook(assignment)
        for cell in nbformat.read(source, as_version=4).cells:
            if answer_cell_question(cell) is None:  # an answer cell ships as its stub
                parts.append(outside_regions(cell.source))
        parts += [p.read_text(encoding="utf-8") for p in _files(course.public_checks(assignment))
                  if p.suffix == ".py"]
    engine = Path(__file__).resolve().parents[1]  # grader/
    kit = course.root / "assignments" / "nncourse"
    parts += [p.read_text(encoding="utf-8") for p in _files(engine) + _files(kit)
              if p.suffix == ".py"]
    return "\n".join(parts)


def _code_lines(text: str) -> Iterator[str]:
    for line in text.splitlines():
        if line.strip():
            yield line.strip()


def course_secrets(course: Course, released: Iterable[str]) -> tuple[Secret, ...]:
    """Everything a kit of the ``released`` homework must not contain (see the module doc)."""
    allowed = shipped_text(course, released)
    secrets: dict[tuple[str, bool, bool], Secret] = {}

    def add(text: str, origin: str, word: bool = False, sha256: bool = False) -> None:
        secrets.setdefault((text, word, sha256), Secret(text, origin, word, sha256))

    seen: set[str] = set()

    def add_line(line: str, origin: str) -> None:
        # Each line is looked up in ``allowed`` once: the examples repeat the references.
        if len(line) >= MIN_LINE_CHARS and line not in seen \
                and sum(c.isalnum() for c in line) >= MIN_LINE_ALNUM:
            seen.add(line)
            if line not in allowed:
                add(line, origin)

    def add_file(path: Path) -> None:
        relative = path.relative_to(course.root).as_posix()
        add(relative, f"the path of {relative}")
        add(hashlib.sha256(path.read_bytes()).hexdigest(), relative, sha256=True)

    for a in course.assignments:
        reference = course.reference_notebook(a.id)
        if reference.exists():
            for index, cell in enumerate(nbformat.read(reference, as_version=4).cells):
                where = f"{reference.relative_to(course.root)}, cell {index + 1}"
                for line in solution_lines(cell.source):
                    add_line(line, where)
                if answer_cell_question(cell) is not None:  # the reference's written answer
                    for line in _code_lines(cell.source):
                        add_line(line, where)
    for path in _files(course.root / "solutions"):
        add_file(path)
        relative = path.relative_to(course.root)
        if path.suffix == ".py":
            add(path.name, f"the name of {relative}", word=True)
            text = path.read_text(encoding="utf-8")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) \
                        and node.name.startswith("test_"):
                    add(node.name, f"a hidden check in {relative}", word=True)
            for line in _code_lines(text):
                add_line(line, str(relative))
        elif path.name == RUBRIC_FILE:
            for text in _strings(tomllib.loads(path.read_text(encoding="utf-8"))):
                for line in _code_lines(text):
                    add_line(line, f"{relative} (a rubric)")
    for path in _files(course.root / "examples"):
        add_file(path)
        if path.suffix == ".ipynb":
            for cell in _code_cells(path.read_bytes()):
                for line in _code_lines(cell):
                    add_line(line, str(path.relative_to(course.root)))
    for name in _instructor_file_names(course):
        add(name, f"the name of the instructor file {name} (course.toml)", word=True)
    for student in course.roster:
        for value in (student.id, student.name, student.email):
            if len(value) >= 3:
                add(value, "an entry of the roster", word=True)
    for student_id, _assignment in course.extensions:
        if len(student_id) >= 3:
            add(student_id, "an entry of the extensions file", word=True)
    return tuple(secrets.values())


def _instructor_file_names(course: Course) -> list[str]:
    # Course keeps the roster and extensions as data; their file names are in course.toml.
    table = tomllib.loads(course.path.read_text(encoding="utf-8")).get("course", {})
    return [Path(table[key]).name for key in ("roster", "extensions") if table.get(key)]


def _code_cells(data: bytes) -> list[str]:
    """The sources of a notebook's code cells (the whole text when it is not a notebook)."""
    try:
        nb = json.loads(data)
    except ValueError:
        return [data.decode("utf-8", errors="replace")]
    cells = nb.get("cells", []) if isinstance(nb, dict) else []
    sources = [c.get("source", "") for c in cells
               if isinstance(c, dict) and c.get("cell_type") == "code"]
    return ["".join(s) if isinstance(s, list) else str(s) for s in sources]


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        if value and all(isinstance(v, str) for v in value):
            yield "".join(value)  # a multi-line notebook field, as the notebook shows it
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)


def _searchable(name: str, data: bytes) -> str:
    """The text to search in one file: a notebook's every string (sources, outputs, metadata),
    decoded from its JSON; any other file's bytes as text (binary files as Latin-1)."""
    if name.endswith(".ipynb"):
        try:
            return "\n".join(_strings(json.loads(data)))
        except ValueError:
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def read_tree(path: Path) -> dict[str, bytes]:
    """Every file of a kit folder, or of a zip, by relative path (``/`` separators)."""
    if path.is_file():
        return {f"{path.name}!{name}": data for name, data in _zip_members(path.read_bytes())}
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in _files(path)}


def _zip_members(data: bytes) -> Iterator[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            if not info.is_dir():
                yield info.filename, archive.read(info)


def scan(files: Mapping[str, bytes], secrets: Iterable[Secret]) -> list[Leak]:
    """The secrets found in ``files`` (relative path -> bytes); a ``.zip`` is opened and its
    members scanned as well. File paths count as text too."""
    secrets = tuple(secrets)
    words = [s for s in secrets if s.word]
    pattern = re.compile(r"\b(" + "|".join(re.escape(s.text) for s in words) + r")\b") \
        if words else None
    by_word = {s.text: s for s in words}
    plain = [s for s in secrets if not s.word and not s.sha256]
    lines = ahocorasick.Automaton()  # every plain secret found in one pass over a file's text
    for index, secret in enumerate(plain):
        lines.add_word(secret.text, index)
    if plain:
        lines.make_automaton()
    hashes = {s.text: s for s in secrets if s.sha256}
    leaks: list[Leak] = []
    for name in sorted(files):
        data = files[name]
        if name.endswith(".zip"):
            leaks += scan({f"{name}!{n}": d for n, d in _zip_members(data)}, secrets)
        text = name + "\n" + _searchable(name, data)
        digest = hashlib.sha256(data).hexdigest()
        if digest in hashes:
            leaks.append(Leak(name, hashes[digest]))
        if plain:
            leaks += [Leak(name, plain[i]) for i in sorted({i for _, i in lines.iter(text)})]
        if pattern is not None:
            leaks += [Leak(name, by_word[w]) for w in sorted(set(pattern.findall(text)))]
    return leaks
