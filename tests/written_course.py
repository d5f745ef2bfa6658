"""The tiny homework of docs/checks.md ("A whole homework in four files") with the two written
questions of "A written question": a course in a folder, submissions that answer them, and a
gradebook made from them without a kernel (the checks' verdicts made up, the answers read
from the files as `grader grade` reads them).

The answer cell's metadata and the rubric are the page's own blocks, so the page shows what
works."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import shutil
import tomllib
from pathlib import Path

import nbformat
from conftest import REPO

from grader.course.config import Course, load_course
from grader.course.questions import load_questions, read_answers
from grader.pipeline.score import Deadlines, score
from grader.pipeline.store import open_gradebook
from grader.pipeline.written import store_answers
from grader.records import CheckResult, GradeRow, Outcome, Status
from grader.ship.student_notebooks import release_notebooks


def _blocks(language: str) -> list[str]:
    text = (REPO / "docs" / "checks.md").read_text(encoding="utf-8")
    section = text.split("## A written question", 1)[1].split("\n## ", 1)[0]
    return [b.split("```", 1)[0] for b in section.split(f"```{language}\n")[1:]]


def _documented_python() -> dict[str, str]:
    found = {}
    text = (REPO / "docs" / "checks.md").read_text(encoding="utf-8")
    for block in text.split("```python\n")[1:]:
        body = block.split("```", 1)[0]
        first, _, rest = body.partition("\n")
        if first.startswith("# file: "):
            found[first.removeprefix("# file: ").split(" (")[0]] = rest
    return found


DOCUMENTED = _documented_python()
[ANSWER_CELL_JSON] = _blocks("json")
[RUBRIC] = _blocks("toml")
ANSWER_CELL = json.loads(ANSWER_CELL_JSON)
RUBRIC_DATA = tomllib.loads(RUBRIC)

PROMPT_1 = ("### Question 1\nRead the roofline below: which layers are memory-bound at batch 1, "
            "and why?")
PROMPT_2 = "### Question 2\nWhy is a FLOP count twice the MAC count?"
FLOPS_REFERENCE = "A multiply-accumulate is a multiplication and an addition: two FLOPs."

GOOD = {"roofline": "Both layers are memory-bound: at batch 1 their intensity is about 1 FLOP "
                    "per byte, well below the ridge point (peak / bandwidth, about 10).",
        "flops": "A MAC is one multiplication and one addition, so two FLOPs."}
WEAK = {"roofline": "The layers are compute-bound because they are big.",
        "flops": "Because it is twice."}
HOSTILE = ("<script>document.title='owned'</script><b>bold?</b> {{ 7 * 7 }} "
           "<img src=x onerror=\"document.title='owned'\">")


def figure_png(seed: int = 0) -> bytes:
    """A small roofline figure, as a notebook would draw it."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.0, 2.6), dpi=60, layout="constrained")
    ax = fig.subplots()
    intensity = [0.1, 1, 10, 100]
    ax.loglog(intensity, [min(1e11, i * 1e10) for i in intensity], color="#3b6ea8")
    ax.scatter([1.0 + seed * 0.1, 0.8], [1e10, 0.8e10], color="#b03a2e")
    ax.set_xlabel("FLOP per byte")
    ax.set_ylabel("FLOP/s")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _reference() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    cells = nb.cells
    cells.append(nbformat.v4.new_code_cell(DOCUMENTED["solutions/hw1/hw1.ipynb"], id="code"))
    cells.append(nbformat.v4.new_code_cell("assert flops(3) == 6", id="check"))
    cells.append(nbformat.v4.new_code_cell("# the roofline (drawn from what the notebook "
                                           "computed)", id="roofline-figure"))
    cells.append(nbformat.v4.new_markdown_cell(PROMPT_1, id="prompt-1"))
    cells.append(nbformat.from_dict(ANSWER_CELL))
    cells.append(nbformat.v4.new_markdown_cell(PROMPT_2, id="prompt-2"))
    cells.append(nbformat.v4.new_markdown_cell(
        FLOPS_REFERENCE, id="flops-answer",
        metadata={"nncourse": {"question": {"id": "flops", "points": 1}}}))
    return nb


def write_course(root: Path) -> Course:
    """The course with the tiny homework and its written questions as hw1."""
    shutil.copy(REPO / "course.toml", root / "course.toml")
    solutions = root / "solutions" / "hw1"
    (solutions / "checks").mkdir(parents=True)
    nbformat.write(_reference(), solutions / "hw1.ipynb")
    (solutions / "checks" / "test_hw1.py").write_text(
        DOCUMENTED["solutions/hw1/checks/test_hw1.py"])
    (solutions / "rubric.toml").write_text(RUBRIC)
    public = root / "assignments" / "hw1" / "checks"
    public.mkdir(parents=True)
    (public / "test_hw1_public.py").write_text(
        DOCUMENTED["assignments/hw1/checks/test_hw1_public.py"])
    course = load_course(root / "course.toml")
    release_notebooks(course)
    return course


def answered(course: Course, answers: dict[str, str], figure: bytes | None = b"",
             reference_code: bool = True) -> nbformat.NotebookNode:
    """The student notebook with ``answers`` written in (a question left out keeps the stub),
    the figure's output set (``b""``: a roofline; None: no output), and the reference code
    (else the template's)."""
    source = course.reference_notebook("hw1") if reference_code else \
        course.student_notebook("hw1")
    nb = nbformat.read(source, as_version=4)
    for cell in nb.cells:
        question = cell.metadata.get("nncourse", {}).get("question")
        if question is not None:
            cell.source = answers.get(question["id"], "YOUR ANSWER HERE")
        if cell.get("id") == "roofline-figure" and figure is not None:
            png = figure or figure_png()
            cell.outputs = [nbformat.v4.new_output(
                "display_data", data={"image/png": base64.b64encode(png).decode("ascii"),
                                      "text/plain": "<Figure>"})]
    return nb


def write_submission(root: Path, student: str, nb: nbformat.NotebookNode,
                     submitted: str | None = "2026-11-04 10:00:00 Europe/Moscow") -> Path:
    folder = root / student / "hw1"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "hw1.ipynb"
    nbformat.write(nb, path)
    if submitted is not None:
        (folder / "timestamp.txt").write_text(submitted + "\n")
    return path


def class_submissions(course: Course, root: Path) -> dict[str, Path]:
    """alice (good), bob (weak), carol (the template: no answer), dave (a hostile answer, and
    a second answer cell), erin (answers the roofline only, with the flops cell deleted)."""
    dave = answered(course, {"roofline": HOSTILE, "flops": "Two operations per MAC."})
    dave.cells.append(nbformat.v4.new_markdown_cell(
        "A second answer.", id="again",
        metadata={"nncourse": {"question": {"id": "flops", "points": 1}}}))
    erin = answered(course, {"roofline": "Both, below the ridge point."})
    erin.cells = [c for c in erin.cells if c.get("id") != "flops-answer"]
    notebooks = {"alice": answered(course, GOOD), "bob": answered(course, WEAK, figure_png(3)),
                 "carol": answered(course, {}, None, reference_code=False), "dave": dave,
                 "erin": erin}
    return {student: write_submission(root, student, nb) for student, nb in notebooks.items()}


CHECKS_EARNED = {"alice": 2, "bob": 1, "carol": 0, "dave": 2, "erin": 2}


def row_for(course: Course, student: str, path: Path, earned: int | None = None) -> GradeRow:
    """A gradebook row for ``path`` as if graded: two checks of a point each, ``earned``
    passed (default: ``CHECKS_EARNED``), submitted on time."""
    passed = CHECKS_EARNED.get(student, 2) if earned is None else earned
    checks = tuple(CheckResult(f"test_hw1::test_{name}", 1.0,
                               Outcome.PASSED if i < passed else Outcome.FAILED,
                               "" if i < passed else "expected more", f"The {name} check")
                   for i, name in enumerate(("flops", "roofline")))
    a = course.assignment("hw1")
    submitted = dt.datetime(2026, 11, 4, 10, 0, tzinfo=course.timezone)
    s = score(checks, submitted, Deadlines(a.lecture_day, course.last_lecture_day,
                                           course.timezone, course.deadline_time))
    return GradeRow(student=student, assignment="hw1",
                    sha256=hashlib.sha256(path.read_bytes()).hexdigest(), path=str(path),
                    submitted_at=submitted.isoformat(), time_problem="", status=Status.OK,
                    detail="the notebook ran to the end", earned=s.earned, possible=s.possible,
                    raw=s.raw, cap=s.cap, final=s.final, late_reason=s.late_reason, seed=1,
                    graded_at="2026-11-05T10:00:00+00:00", seconds=1.0, checks=checks)


def gradebook(course: Course, path: Path, submissions: dict[str, Path]) -> Path:
    """A gradebook with a row per submission and its answers, as `grader grade` stores them."""
    questions = load_questions(course, "hw1")
    with open_gradebook(path) as book:
        for student, notebook in submissions.items():
            row = row_for(course, student, notebook)
            book.put(row)
            store_answers(book, (student, "hw1", row.sha256),
                          read_answers(notebook, questions))
    return path
