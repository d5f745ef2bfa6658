"""Written questions: what a person marks, not a check.

An answer cell is a markdown cell whose metadata names its question,
``metadata["nncourse"]["question"] = {"id": "roofline", "points": 3}`` (optionally
``"figure": "<id of the cell that draws the figure it discusses>"``); the question's prompt is
the markdown cell above it. It is found by that id, never by its position. The rubric and the
model answer stay with the instructor, in ``solutions/<hw>/rubric.toml``::

    [question.roofline]
    points = 3                      # as the answer cell's metadata says
    title = "Memory-bound layers"   # optional: a short name for the pages
    start = 0                       # optional: the points before any item (a rubric that
                                    # takes points starts at ``points``)
    model_answer = \"\"\"fc1 and fc2: their intensity at batch 1 is below the ridge point.\"\"\"

    [question.roofline.items]
    layers = { points = 2, text = "(the sentence the student reads when it is applied)" }
    no_why = { points = -1, text = "(a rubric item may take points)" }

A question's points are ``start`` plus its applied items, kept within 0..``points``. Answers
are read from the submitted file (``read_answers``), bounded, and never by running it.

Public: ``RubricItem``, ``Question``, ``load_questions``, ``rubric_path``, ``read_answers``,
``no_answer``, ``answer_cell_question``, ``answers_in``, ``ANSWER_STUB``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from grader.course.config import Course, _Reader
from grader.course.notebook import METADATA_KEY
from grader.errors import ConfigError
from grader.records import Answer
from grader.text import ANSWER_CHARS, ANSWERS_NOTEBOOK_BYTES, FIGURE_BYTES, clip, first_line

RUBRIC_FILE = "rubric.toml"
QUESTION_KEY = "question"  # metadata["nncourse"]["question"]
ANSWER_STUB = "YOUR ANSWER HERE"  # what a student notebook's answer cell holds
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PNG = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class RubricItem:
    """One rubric item: points added (taken when negative) and the sentence the student
    reads."""

    id: str
    points: float
    text: str


@dataclass(frozen=True)
class Question:
    """A written question: its id and points (the answer cell's metadata), its prompt (the
    markdown cell above the answer cell of the reference notebook), the cell id of the figure
    it discusses (empty: none), and the instructor's rubric and model answer."""

    id: str
    points: float
    title: str
    prompt: str
    figure: str
    items: tuple[RubricItem, ...]
    model_answer: str
    start: float = 0.0

    def item(self, item_id: str) -> RubricItem:
        for item in self.items:
            if item.id == item_id:
                return item
        raise KeyError(item_id)

    def points_for(self, item_ids: tuple[str, ...]) -> float:
        """``start`` plus the points of the items applied, kept within 0..``points``."""
        total = self.start + sum(self.item(i).points for i in item_ids)
        return round(min(self.points, max(0.0, total)), 2)


def rubric_path(course: Course, assignment: str) -> Path:
    return course.root / "solutions" / assignment / RUBRIC_FILE


def answer_cell_question(cell: Any) -> dict[str, Any] | None:
    """The ``question`` metadata of a notebook cell (a dict with an ``id``), or None."""
    tag = cell.get("metadata", {}).get(METADATA_KEY) if isinstance(cell, dict) else None
    question = tag.get(QUESTION_KEY) if isinstance(tag, dict) else None
    if isinstance(question, dict) and isinstance(question.get("id"), str):
        return question
    return None


@dataclass(frozen=True)
class _Cell:
    """An answer cell of the reference notebook."""

    id: str
    points: float
    figure: str
    prompt: str
    where: str


def _reference_cells(path: Path) -> list[_Cell]:
    if not path.exists():
        return []
    cells = nbformat.read(path, as_version=4).cells
    found: list[_Cell] = []
    for index, cell in enumerate(cells):
        question = answer_cell_question(cell)
        if question is None:
            continue
        where = f"{path}, cell {index + 1}"
        qid, points, figure = question["id"], question.get("points"), question.get("figure", "")
        if not _ID.match(qid):
            raise ConfigError(f"{where}: question id {qid!r}: use letters, digits, _ and - "
                              f"(at most 64)")
        if isinstance(points, bool) or not isinstance(points, int | float) or points <= 0:
            raise ConfigError(f"{where}: question {qid!r}: points must be a number above 0, "
                              f"got {points!r}")
        if not isinstance(figure, str):
            raise ConfigError(f"{where}: question {qid!r}: figure must be a cell id, got "
                              f"{figure!r}")
        if figure and not any(c.get("id") == figure for c in cells):
            raise ConfigError(f"{where}: question {qid!r}: no cell has the id {figure!r} "
                              f"(the figure it refers to)")
        if any(c.id == qid for c in found):
            raise ConfigError(f"{where}: question {qid!r} is asked twice")
        above = cells[index - 1] if index else None
        prompt = above.source if above is not None and above.cell_type == "markdown" else ""
        found.append(_Cell(qid, float(points), figure, prompt, where))
    return found


def _items(reader: _Reader) -> tuple[RubricItem, ...]:
    items = []
    for item_id in list(reader.table):
        if not _ID.match(item_id):
            raise reader._err(item_id, "an item id uses letters, digits, _ and - (at most 64)")
        entry = reader.sub(item_id, default_empty=False)
        points, text = entry.get("points", float), entry.get("text", str).strip()
        entry.finish()
        if not text:
            raise entry._err("text", "the sentence the student reads is empty")
        items.append(RubricItem(item_id, points, text))
    if not items:
        raise ConfigError(f"{reader.path}: {reader.where}: a question needs at least one "
                          f"rubric item")
    return tuple(items)


def _question(reader: _Reader, cell: _Cell) -> Question:
    points = reader.get("points", float)
    if points != cell.points:
        raise reader._err("points", f"{points:g} here, but {cell.points:g} in the answer cell's "
                                    f"metadata ({cell.where})")
    default_title = first_line(cell.prompt.lstrip("# "), 80) or cell.id
    title = reader.get("title", str, default_title)
    start = reader.get("start", float, 0.0)
    if not 0.0 <= start <= points:
        raise reader._err("start", f"must be within 0..{points:g}, got {start:g}")
    model_answer = reader.get("model_answer", str)
    items = _items(reader.sub("items", default_empty=False))
    reader.finish()
    return Question(cell.id, points, title, cell.prompt, cell.figure, items, model_answer, start)


def load_questions(course: Course, assignment: str) -> tuple[Question, ...]:
    """The written questions of ``assignment``, in the reference notebook's order: each
    answer cell of the reference with its rubric from ``solutions/<hw>/rubric.toml``. Empty
    when the homework asks none. A rubric that does not match the answer cells, or breaks its
    format, is a ConfigError naming the file and the key."""
    cells = _reference_cells(course.reference_notebook(assignment))
    path = rubric_path(course, assignment)
    if not path.exists():
        if cells:
            raise ConfigError(f"{cells[0].where}: asks the written question {cells[0].id!r}, "
                              f"but its rubric file {path} does not exist")
        return ()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    top = _Reader(path, data, "")
    table = top.sub(QUESTION_KEY)
    top.finish()
    by_id = {c.id: c for c in cells}
    for qid in table.table:
        if qid not in by_id:
            raise table._err(qid, f"no answer cell of {course.reference_notebook(assignment)} "
                                  f"asks this question")
    questions = []
    for cell in cells:
        if cell.id not in table.table:
            raise ConfigError(f"{path}: question.{cell.id}: missing (asked in {cell.where})")
        questions.append(_question(table.sub(cell.id, default_empty=False), cell))
    table.finish()
    return tuple(questions)


# -- answers in a submitted notebook ------------------------------------------------------------


def _hash(text: str, figure: bytes | None) -> str:
    return hashlib.sha256(text.encode("utf-8") + b"\0" + (figure or b"")).hexdigest()


def no_answer(question: Question, why: str) -> Answer:
    """The answer of a question no cell answers: 0 points, flagged with ``why``."""
    return Answer(question.id, "", None, _hash("", None), f"no answer: {why}", missing=True)


def _source(cell: Any) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _figure(cells: list[Any], cell_id: str) -> tuple[bytes | None, str]:
    """The first PNG output of the cell ``cell_id``, and what is wrong when there is none."""
    cell = next((c for c in cells if isinstance(c, dict) and c.get("id") == cell_id), None)
    if cell is None:
        return None, f"the figure's cell ({cell_id}) is not in the notebook"
    for output in cell.get("outputs", []) or []:
        data = output.get("data", {}) if isinstance(output, dict) else {}
        encoded = data.get("image/png") if isinstance(data, dict) else None
        if encoded is None:
            continue
        text = "".join(encoded) if isinstance(encoded, list) else str(encoded)
        if len(text) > FIGURE_BYTES * 4 // 3 + 8:
            return None, f"the figure is larger than {FIGURE_BYTES:,} bytes; left out"
        try:
            png = base64.b64decode(text, validate=False)
        except (binascii.Error, ValueError):
            return None, "the figure's PNG output is not base64; left out"
        if not png.startswith(_PNG):
            return None, "the figure's output is not a PNG; left out"
        return png, ""
    return None, f"the figure's cell ({cell_id}) has no PNG output (not run before saving?)"


def _answer(question: Question, cells: list[Any]) -> Answer:
    found = [c for c in cells if (q := answer_cell_question(c)) and q["id"] == question.id]
    if not found:
        return no_answer(question, "no cell carries this question")
    flags = [f"{len(found)} cells carry this question; the first is marked"] \
        if len(found) > 1 else []
    text = _source(found[0]).strip()
    if not text or text == ANSWER_STUB:
        return no_answer(question, "the answer cell was left as given")
    if len(text) > ANSWER_CHARS:
        flags.append(f"cut to its first {ANSWER_CHARS:,} characters (it had {len(text):,})")
        text = clip(text, ANSWER_CHARS)
    figure = None
    if question.figure:
        figure, problem = _figure(cells, question.figure)
        if problem:
            flags.append(problem)
    return Answer(question.id, text, figure, _hash(text, figure), "; ".join(flags))


def read_answers(path: Path, questions: tuple[Question, ...]) -> tuple[Answer, ...]:
    """Each question's answer in the notebook file at ``path``: read as data (never run),
    at most ``ANSWERS_NOTEBOOK_BYTES`` of it. A file that cannot be read (or a symbolic link)
    answers nothing."""
    if not questions:
        return ()
    try:
        # a symbolic link is not followed: a submission names no file outside itself
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as f:
            data = f.read(ANSWERS_NOTEBOOK_BYTES + 1)
    except OSError as exc:
        return tuple(no_answer(q, f"the file cannot be read ({exc.strerror or exc})")
                     for q in questions)
    if len(data) > ANSWERS_NOTEBOOK_BYTES:
        return tuple(no_answer(q, f"the file is larger than {ANSWERS_NOTEBOOK_BYTES:,} bytes")
                     for q in questions)
    try:
        # plain JSON, as data: nbformat's reader would validate (and warn about) a file
        # that only has to give up its answer cells
        nb = json.loads(data.decode("utf-8"))
        cells = [c for c in nb["cells"] if isinstance(c, dict)]
    except (ValueError, KeyError, TypeError, RecursionError):
        return tuple(no_answer(q, "the file is not a notebook that can be read")
                     for q in questions)
    return tuple(_answer(q, cells) for q in questions)


def answers_in(nb: Any) -> tuple[tuple[str, float, Answer], ...]:
    """The written questions a notebook (a student's own, with no rubric at hand) asks, in its
    order: each answer cell's question id, its points and its answer as the grader will read
    it (missing when left as given; flagged when its figure has no output in the file)."""
    cells = [c for c in nb.get("cells", []) if isinstance(c, dict)]
    found: list[tuple[str, float, Answer]] = []
    for cell in cells:
        asked = answer_cell_question(cell)
        points = asked.get("points") if asked is not None else None
        if asked is None or any(qid == asked["id"] for qid, _, _ in found) or \
                isinstance(points, bool) or not isinstance(points, int | float):
            continue
        figure = asked.get("figure", "")
        question = Question(asked["id"], float(points), asked["id"], "",
                            figure if isinstance(figure, str) else "", (), "")
        found.append((question.id, question.points, _answer(question, cells)))
    return tuple(found)
