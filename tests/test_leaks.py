"""The secret scan: a student kit of every homework holds nothing from the instructor's side.

The needles here are gathered by this test on its own, not with grader/tools/leaks.py (which `grader
release` runs before it writes a kit), so that a mistake there cannot hide a leak here. They
are: every line of every solution region of every reference notebook (code and markdown), the
hidden check files' names, their test function names and code lines, every file under
solutions/ and examples/ (its path, and its bytes as an exact copy), the example submissions'
code lines, and the roster and extensions files with their entries.

Lines left out, and why:
- fewer than 20 characters, or fewer than 10 letters and digits (``return x``, ``else:``,
  ``model.eval()``, a markdown table rule): everyday text, which the engine and the course kit
  hold for their own reasons; a one-line secret that short is guessable from the docstring;
- a line the kit ships on purpose, found in the course's own sources (not in the kit): code
  outside the solution regions of the committed student notebooks (a later homework may give
  an earlier one's counter as a tool), the public checks, the course kit and the engine.
A test below shows that this leaves most of every reference's solution lines in the scan, and
another plants each kind of secret in a kit and sees the scan find it.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO

from grader.course.config import load_course
from grader.ship.kit import write_kit
from grader.tools.leaks import course_secrets, read_tree, scan

REGION = re.compile(r"^[ \t]*### BEGIN SOLUTION[ \t]*$(.*?)^[ \t]*### END SOLUTION[ \t]*$",
                    re.M | re.S)
ROSTER = "student,name,email\nzelda42,Zelda Quux,zelda.quux@example.org\n"
EXTENSIONS = "student,assignment,extension\nyorick77,hw2,2d\n"


@dataclass(frozen=True)
class Needle:
    text: str
    origin: str
    word: bool = False  # matched as a whole word
    digest: bool = False  # the sha256 of a whole file


def cell_sources(path: Path, kinds: tuple[str, ...] = ("code", "markdown", "raw")) -> list[str]:
    try:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    except ValueError:  # the malformed example submission: all of its text
        return [path.read_text(encoding="utf-8", errors="replace")]
    return ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in cells if c["cell_type"] in kinds]


def shipped_on_purpose() -> str:
    """What a kit holds by design, read from the course's sources."""
    parts = []
    for notebook in sorted(REPO.glob("assignments/hw*/*.ipynb")):
        parts += cell_sources(notebook)
    for pattern in ("assignments/hw*/checks/*.py", "assignments/nncourse/*.py", "grader/**/*.py"):
        parts += [p.read_text(encoding="utf-8") for p in sorted(REPO.glob(pattern))]
    return "\n".join(parts)


def generic(line: str) -> bool:
    return len(line) < 20 or sum(c.isalnum() for c in line) < 10


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def solution_region_lines() -> Iterator[tuple[str, str]]:
    for reference in sorted(REPO.glob("solutions/hw*/*.ipynb")):
        for index, source in enumerate(cell_sources(reference)):
            for region in REGION.findall(source):
                for line in region.splitlines():
                    if line.strip():
                        yield line.strip(), f"{reference.relative_to(REPO)}, cell {index + 1}"


def needles(course_root: Path) -> list[Needle]:
    allowed = shipped_on_purpose()
    found: dict[tuple[str, bool, bool], Needle] = {}

    def add(needle: Needle) -> None:
        found.setdefault((needle.text, needle.word, needle.digest), needle)

    def add_lines(text: str, origin: str) -> None:
        for line in (ln.strip() for ln in text.splitlines()):
            if line and not generic(line) and line not in allowed:
                add(Needle(line, origin))

    for line, origin in solution_region_lines():
        if not generic(line) and line not in allowed:
            add(Needle(line, origin))
    for folder in ("solutions", "examples"):
        for path in files_under(REPO / folder):
            relative = path.relative_to(REPO).as_posix()
            add(Needle(relative, "a path"))
            add(Needle(hashlib.sha256(path.read_bytes()).hexdigest(), relative, digest=True))
            if path.suffix == ".py":
                add(Needle(path.name, f"the name of {relative}", word=True))
                text = path.read_text(encoding="utf-8")
                for name in re.findall(r"^\s*(?:async\s+)?def (test_\w+)", text, re.M):
                    add(Needle(name, f"a hidden check in {relative}", word=True))
                add_lines(text, relative)
            elif path.suffix == ".ipynb":
                for source in cell_sources(path, ("code",)):
                    add_lines(source, relative)
    for name, text in (("roster.csv", ROSTER), ("extensions.csv", EXTENSIONS)):
        add(Needle(name, "an instructor file", word=True))
        for row in text.splitlines()[1:]:
            for value in row.split(",")[:1 if name == "extensions.csv" else 3]:
                add(Needle(value, f"an entry of {name}", word=True))
    assert (course_root / "roster.csv").read_text() == ROSTER
    return list(found.values())


def text_of(name: str, data: bytes) -> str:
    try:
        if name.endswith(".ipynb"):  # every string in it: sources, outputs, metadata
            return "\n".join(strings(json.loads(data)))
    except ValueError:
        pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        if all(isinstance(v, str) for v in value):
            yield "".join(value)
        for v in value:
            yield from strings(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from strings(v)


def every_file(kit: Path) -> dict[str, bytes]:
    """The kit folder's files, and every member of every zip beside or inside it."""
    files = {p.relative_to(kit.parent).as_posix(): p.read_bytes() for p in files_under(kit)}
    for archive in sorted(kit.parent.glob("*.zip")):
        with zipfile.ZipFile(archive) as z:
            files.update({f"{archive.name}!{i.filename}": z.read(i) for i in z.infolist()})
    return files


def find(files: dict[str, bytes], needles: list[Needle]) -> list[tuple[str, Needle]]:
    words = {n.text: n for n in needles if n.word}
    word_pattern = re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")\b")
    digests = {n.text: n for n in needles if n.digest}
    plain = [n for n in needles if not n.word and not n.digest]
    hits = []
    for name, data in files.items():
        text = name + "\n" + text_of(name, data)
        if (digest := hashlib.sha256(data).hexdigest()) in digests:
            hits.append((name, digests[digest]))
        hits += [(name, n) for n in plain if n.text in text]
        hits += [(name, words[w]) for w in set(word_pattern.findall(text))]
    return hits


@pytest.fixture(scope="module")
def course_root(tmp_path_factory) -> Path:
    """A copy of the course with a roster and an extensions file, as an instructor has."""
    root = tmp_path_factory.mktemp("course")
    for folder in ("assignments", "solutions", "examples"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "roster.csv").write_text(ROSTER)
    (root / "extensions.csv").write_text(EXTENSIONS)
    text = (REPO / "course.toml").read_text().replace(
        'late_policy = "cap"',
        'late_policy = "cap"\nroster = "roster.csv"\nextensions = "extensions.csv"')
    (root / "course.toml").write_text(text)
    return root


@pytest.fixture(scope="module")
def kit(course_root, tmp_path_factory) -> Path:
    course = load_course(course_root / "course.toml")
    out = tmp_path_factory.mktemp("release") / "kit"
    write_kit(course, out, [a.id for a in course.assignments], archive=True)
    return out


@pytest.fixture(scope="module")
def all_needles(course_root) -> list[Needle]:
    return needles(course_root)


def test_a_kit_of_every_homework_holds_no_secret(kit, all_needles):
    files = every_file(kit)
    assert any(name.startswith("kit.zip!kit/") for name in files)
    assert len(files) > 80  # the folder and the zip, weights and notebooks included
    hits = find(files, all_needles)
    assert hits == [], "\n".join(f"{name}: {n.text[:80]!r} ({n.origin})" for name, n in hits)


def test_the_filter_keeps_most_solution_lines_in_the_scan(all_needles):
    scanned = {n.text for n in all_needles}
    by_reference: dict[str, list[bool]] = {}
    for line, origin in solution_region_lines():
        by_reference.setdefault(origin.split(",")[0], []).append(line in scanned)
    assert len(by_reference) == 6
    # Homework 1 keeps the least: its answers are short formulas, and later notebooks hand out
    # its hook counter and timing loop as tools (26 of its 82 lines; see the module doc).
    for reference, kept in by_reference.items():
        assert sum(kept) >= 30 and sum(kept) / len(kept) >= 0.4, \
            f"{reference}: {sum(kept)} of {len(kept)} lines scanned"
    every = [k for kept in by_reference.values() for k in kept]
    assert sum(every) / len(every) >= 0.6
    kinds = {n.origin.split(" in ")[0] for n in all_needles if n.word}
    assert {"a hidden check", "an entry of roster.csv", "an entry of extensions.csv"} <= kinds


def longest_secret_line(needles: list[Needle], reference: str) -> str:
    lines = [n.text for n in needles if n.origin.startswith(reference) and not n.word
             and not n.digest]
    return max(lines, key=len)


def rezip(archive: Path, member: str, extra: bytes) -> None:
    with zipfile.ZipFile(archive) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    members[member] += extra
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    archive.write_bytes(buffer.getvalue())


PLANTS = {
    "reference-notebook-as-the-template": lambda kit, n: shutil.copy(
        REPO / "solutions/hw3/hw3.ipynb", kit / "assignments/hw3/hw3.ipynb"),
    "one-solution-line-in-the-readme": lambda kit, n: (kit / "README.md").write_text(
        (kit / "README.md").read_text() + "\n" + longest_secret_line(n, "solutions/hw4") + "\n"),
    "a-hidden-check-file": lambda kit, n: shutil.copy(
        REPO / "solutions/hw5/checks/test_hw5.py", kit / "assignments/hw5/checks/test_x.py"),
    "a-hidden-test-name-in-the-engine": lambda kit, n: (kit / "grader/cli/main.py").write_text(
        (kit / "grader/cli/main.py").read_text() + "\n# " + next(
            x.text for x in n if x.origin.startswith("a hidden check in solutions/hw6")) + "\n"),
    "an-example-submission": lambda kit, n: shutil.copy(
        REPO / "examples/submissions/bob/hw1/hw1.ipynb", kit / "assignments/hw1/bob.ipynb"),
    "a-roster-email-in-course-toml": lambda kit, n: (kit / "course.toml").write_text(
        (kit / "course.toml").read_text() + "# zelda.quux@example.org\n"),
    "a-solution-line-inside-the-zip": lambda kit, n: rezip(
        kit.parent / "kit.zip", "kit/assignments/hw2/checks/test_hw2_public.py",
        ("\n# " + longest_secret_line(n, "solutions/hw2")).encode()),
}


@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_the_scan_finds_a_planted_leak(plant, kit, course_root, all_needles, tmp_path):
    planted = tmp_path / "kit"
    shutil.copytree(kit, planted)
    shutil.copy(kit.parent / "kit.zip", tmp_path / "kit.zip")
    before = {name: data for name, data in every_file(planted).items()}
    PLANTS[plant](planted, all_needles)
    changed = {name: data for name, data in every_file(planted).items()
               if before.get(name) != data}
    assert changed, "the plant changed nothing"
    assert find(changed, all_needles), f"the test's scan missed: {plant}"
    # grader/tools/leaks.py, which `grader release` runs, finds it too
    course = load_course(course_root / "course.toml")
    library_files = {f"kit/{k}": v for k, v in read_tree(planted).items() if f"kit/{k}" in changed}
    library_files |= {k: v for k, v in read_tree(tmp_path / "kit.zip").items() if k in changed}
    assert library_files.keys() == changed.keys()
    assert scan(library_files, course_secrets(course, [a.id for a in course.assignments])), \
        f"grader/tools/leaks.py missed: {plant}"
