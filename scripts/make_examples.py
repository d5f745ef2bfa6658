"""Write the bundled example submissions (examples/submissions/) for `make demo`.

Each example is made from the reference or student notebook, so the examples never drift from
the homework: run this again after changing a notebook.

    python scripts/make_examples.py

Written questions (docs/checks.md, "A written question"): a submission made from the reference
answers them with the reference's answers, one made from the student notebook (carol's) leaves
them as given (no answer). ``examples/written/<hw>.toml``, for a homework that asks written
questions, gives other answers and the marks that `make demo` imports::

    [answers.bob]                     # bob's answers, by question id (a weak one, say)
    roofline = "The layers are compute-bound because they are big."

    [marks.alice.roofline]            # a mark, by student and question: rubric items ...
    items = ["names_layers", "ridge"]
    comment = "Clear, and read off the figure."

    [marks.bob.roofline]              # ... or points given directly
    points = 0.5
    comment = "Which layers are below the ridge point?"

The marks are written to ``examples/marks.csv`` (a `grader marks` sheet, with the hash of each
answer as the example notebook holds it); answers no mark names stay for `grader mark`.

A student saves the notebook with its outputs, so the figure a question discusses is in the
file: each reference is run once (nbclient, one thread, in a temporary folder) and the PNG
outputs of the cells its questions name are kept in every example made from it (every other
output is cleared, as before).
"""

from __future__ import annotations

import csv
import datetime as dt
import importlib.util
import os
import shutil
import tempfile
import tomllib
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from grader.course.config import Course, load_course
from grader.course.questions import answer_cell_question, load_questions, read_answers
from grader.ship.student_notebooks import student_version

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "examples" / "submissions"
WRITTEN = ROOT / "examples" / "written"  # <hw>.toml: the examples' answers and marks
MARKS = ROOT / "examples" / "marks.csv"  # what `make demo` imports


# For each later homework: the realistic wrong versions bob's notebook holds (mutants from
# tests/hwN_mutants.py: a mistake, and for a homework with a challenge a weaker, honest
# solution of it, so that the leaderboard has two different results); alice submits the
# reference of every homework.
WRONG = {
    "hw2": ("mask_not_reapplied", "challenge_weaker"),
    "hw3": ("tt_delta_without_sqrt", "challenge_weaker"),  # the challenge needs Tucker-2
    "hw4": ("float_model_as_quantized", "challenge_weaker"),
    "hw5": ("static_batch",),
    "hw6": ("kl_mean_reduction",),
}


def _mutants(hw: str = "hw1"):
    path = ROOT / "tests" / f"{hw}_mutants.py"
    spec = importlib.util.spec_from_file_location(f"{hw}_mutants", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.MUTANTS


def _clean(nb: nbformat.NotebookNode,
           figures: dict[str, list] | None = None) -> nbformat.NotebookNode:
    """``nb`` without outputs, except the figures (``{cell id: PNG outputs}``) its written
    questions discuss."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [nbformat.from_dict(o) for o in (figures or {}).get(cell.get("id"), [])]
            cell.execution_count = None
    return nb


def _figures(course: Course, hw: str) -> dict[str, list]:
    """The PNG outputs of the cells that ``hw``'s written questions name, from one run of the
    reference (nbclient, one thread, in a temporary folder)."""
    wanted = {q.figure for q in load_questions(course, hw) if q.figure}
    if not wanted:
        return {}
    nb = nbformat.read(course.reference_notebook(hw), as_version=4)
    os.environ["OMP_NUM_THREADS"] = "1"
    with tempfile.TemporaryDirectory() as folder:
        NotebookClient(nb, timeout=600, resources={"metadata": {"path": folder}}).execute()
    figures = {}
    for cell in nb.cells:
        if cell.get("id") in wanted:
            figures[cell.id] = [{"output_type": "display_data", "metadata": {},
                                 "data": {"image/png": o["data"]["image/png"]}}
                                for o in cell.get("outputs", [])
                                if "image/png" in o.get("data", {})]
    missing = wanted - {k for k, v in figures.items() if v}
    assert not missing, f"{hw}: the reference drew no PNG in cells {sorted(missing)}"
    print(f"{hw}: kept the figures of cells {sorted(figures)}")
    return figures


def _mutate(nb: nbformat.NotebookNode, replacements: list[tuple[str, str]]) -> None:
    for old, new in replacements:
        cells = [c for c in nb.cells if c.cell_type == "code" and old in c.source]
        assert len(cells) == 1, f"{old!r} is not in exactly one cell"
        cells[0].source = cells[0].source.replace(old, new)


def _insert_after_first_code(nb: nbformat.NotebookNode, source: str) -> None:
    first = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    nb.cells.insert(first + 1, nbformat.v4.new_code_cell(source, id="inserted-by-student"))


def _written(hw: str) -> dict[str, dict[str, dict[str, object]]]:
    path = WRITTEN / f"{hw}.toml"
    return tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _answer(nb: nbformat.NotebookNode, student: str, hw: str) -> None:
    """Write the example answers ``examples/written/<hw>.toml`` gives ``student``."""
    answers = _written(hw).get("answers", {}).get(student, {})
    for cell in nb.cells:
        question = answer_cell_question(cell)
        if question is not None and question["id"] in answers:
            cell.source = str(answers[question["id"]])


def _write(student: str, nb: nbformat.NotebookNode | str, timestamp: str | None,
           hw: str = "hw1") -> None:
    folder = OUT / student / hw
    folder.mkdir(parents=True)
    path = folder / f"{hw}.ipynb"
    if isinstance(nb, str):
        path.write_text(nb, encoding="utf-8")
    else:
        _answer(nb, student, hw)
        nbformat.write(nb, path)
    if timestamp is not None:
        (folder / "timestamp.txt").write_text(timestamp + "\n", encoding="utf-8")


def main() -> None:
    course = load_course(ROOT / "course.toml")
    reference = nbformat.read(course.reference_notebook("hw1"), as_version=4)
    figures = {hw: _figures(course, hw) for hw in ["hw1", *sorted(WRONG)]}
    shutil.rmtree(OUT, ignore_errors=True)

    def fresh() -> nbformat.NotebookNode:
        return _clean(nbformat.from_dict(reference), figures["hw1"])

    # HW1 is given on 2026-11-03: 100 % until 2026-11-04 11:59, 75 % until 2026-11-05 11:59,
    # 50 % until the last lecture day (2026-12-08) 11:59, Moscow time.
    _write("alice", fresh(), "2026-11-04 09:15:00.000000 Europe/Moscow")
    buggy = fresh()
    _mutate(buggy, _mutants()["groups_ignored"])
    _write("bob", buggy, "2026-11-04 11:59:30.000000 Europe/Moscow")
    _write("carol", student_version(reference, "hw1"), "2026-11-03T20:00:00+03:00")
    raises = fresh()
    _insert_after_first_code(raises, "# my experiment\n"
                                     "model = nncourse.make_cnn(channels=(32, 64))")
    _write("dave", raises, "2026-11-05 10:00:00.000000 Europe/Moscow")
    endless = fresh()
    _insert_after_first_code(endless, "# wait until training converges\nimport time\n"
                                      "while True:\n    time.sleep(0.1)")
    _write("erin", endless, "2026-11-04 08:00:00.000000 Europe/Moscow")
    _write("grace", fresh(), None)  # correct, but no timestamp.txt: the final waits
    # hugo hides his tracebacks, and three of his cells raise: every error is still listed
    hidden = fresh()
    _insert_after_first_code(hidden, "# quieter output\nip = get_ipython()\n"
                                     "ip.showtraceback = lambda *args, **kwargs: None")
    code = [i for i, c in enumerate(hidden.cells) if c.cell_type == "code"]
    for offset, mistake in ((3, "print(accuracy_of_my_model)"),
                            (6, "assert 1 + 1 == 3, 'my own check'")):
        hidden.cells.insert(code[offset] + 1, nbformat.v4.new_code_cell(
            mistake, id=f"hugo-{offset}"))
    hidden.cells.append(nbformat.v4.new_code_cell("results['summary']", id="hugo-last"))
    _write("hugo", hidden, "2026-11-04 10:30:00.000000 Europe/Moscow")
    # ivan's counter ends the process once it has counted: his kernel dies in the checks
    dying = fresh()
    dying.cells.append(nbformat.v4.new_code_cell(
        "import os\n\n\ndef count_params(module):\n"
        "    total = sum(p.numel() for p in module.parameters())\n"
        "    os._exit(0)  # done counting\n    return total", id="ivan-last"))
    _write("ivan", dying, "2026-11-04 10:45:00.000000 Europe/Moscow")
    text = nbformat.writes(fresh())
    _write("frank", text[: len(text) // 2], "2026-11-20 18:00:00.000000 Europe/Moscow")
    # Later homeworks: alice hands in the reference, bob a realistic wrong version, both on
    # the morning after the lecture (on time).
    for hw, mutants in sorted(WRONG.items()):
        reference = nbformat.read(course.reference_notebook(hw), as_version=4)
        day = course.assignment(hw).lecture_day + dt.timedelta(days=1)
        stamp = f"{day.isoformat()} 10:00:00.000000 Europe/Moscow"
        _write("alice", _clean(nbformat.from_dict(reference), figures[hw]), stamp, hw)
        wrong = _clean(nbformat.from_dict(reference), figures[hw])
        for mutant in mutants:
            _mutate(wrong, _mutants(hw)[mutant])
        _write("bob", wrong, stamp, hw)
    count = sum(1 for _ in OUT.glob("*/*/*.ipynb"))
    print(f"wrote {count} example submissions to {OUT}")
    _write_marks(course)


def _write_marks(course: Course) -> None:
    """examples/marks.csv: the marks of examples/written/*.toml, for `make demo` to import
    (no file when no homework asks written questions)."""
    rows = []
    for a in course.assignments:
        questions = load_questions(course, a.id)
        for student, by_question in sorted(_written(a.id).get("marks", {}).items()):
            path = OUT / student / a.id / a.notebook
            answers = {x.question: x for x in read_answers(path, questions)}
            for question, mark in sorted(by_question.items()):
                points = mark.get("points")
                rows.append({"student": student, "assignment": a.id, "question": question,
                             "points": "" if points is None else f"{float(points):g}",
                             "items": " ".join(mark.get("items", [])),
                             "comment": mark.get("comment", ""),
                             "answer_sha256": answers[question].sha256, "version": 0})
    MARKS.unlink(missing_ok=True)
    if rows:
        with MARKS.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {len(rows)} marks to {MARKS}")


if __name__ == "__main__":
    main()
