"""Tests for grader/course/questions.py: the answer cells and rubric.toml of written
questions, checked on load with errors that name the file and the key, and the answers read
from a submitted file as data (bounded, never run)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import nbformat
import pytest
from written_course import GOOD, RUBRIC, answered, figure_png, write_course, write_submission

from grader.course.config import Course
from grader.course.questions import load_questions, read_answers, rubric_path
from grader.errors import ConfigError
from grader.text import ANSWER_CHARS, ANSWERS_NOTEBOOK_BYTES, FIGURE_BYTES


@pytest.fixture
def course(tmp_path: Path) -> Course:
    return write_course(tmp_path)


def test_the_documented_questions_load_in_the_notebooks_order(course: Course) -> None:
    roofline, flops = load_questions(course, "hw1")
    assert (roofline.id, roofline.points, roofline.figure) == ("roofline", 2.0, "roofline-figure")
    assert roofline.title == "Memory-bound layers"
    assert "which layers are memory-bound" in roofline.prompt  # the cell above the answer
    assert [i.id for i in roofline.items] == ["names_layers", "ridge", "compute_bound"]
    assert "ridge point" in roofline.model_answer
    assert (flops.id, flops.points, flops.start, flops.figure) == ("flops", 1.0, 1.0, "")


@pytest.mark.parametrize(("items", "points"), [
    ((), 0.0), (("names_layers",), 1.0), (("names_layers", "ridge"), 2.0),
    (("compute_bound",), 0.0),  # never below 0
    (("names_layers", "ridge", "compute_bound"), 1.0)])
def test_points_are_start_plus_items_within_0_and_the_question(course: Course, items, points):
    roofline, _ = load_questions(course, "hw1")
    assert roofline.points_for(items) == points


def test_a_rubric_that_takes_points_starts_at_the_top(course: Course) -> None:
    _, flops = load_questions(course, "hw1")
    assert (flops.points_for(()), flops.points_for(("no_reason",))) == (1.0, 0.0)


def test_a_homework_without_questions_has_none(course: Course) -> None:
    assert load_questions(course, "hw2") == ()


def _rubric(course: Course, text: str) -> Path:
    path = rubric_path(course, "hw1")
    path.write_text(text)
    return path


@pytest.mark.parametrize(("change", "key"), [
    (("points = 2\ntitle", "points = 3\ntitle"), "question.roofline.points"),
    (("start = 1", "start = 5"), "question.flops.start"),
    (("start = 1", "stat = 1"), "question.flops.stat"),  # a typo: unknown key
    (('text = "Say which', 'txt = "Say which'), "question.flops.items.no_reason.text: missing"),
    (('no_reason = { points = -1, text = "Say which two operations a MAC is made of." }',
      'no_reason = { points = -1, text = "  " }'), "question.flops.items.no_reason.text"),
    (("names_layers = {", "names.layers = {"), "question.roofline.items.names"),
    (('no_reason = { points = -1', 'no_reason = { points = "one"'),
     "question.flops.items.no_reason.points"),
    (("[question.flops]\n", "[question.flop]\n"), "question.flop"),
])
def test_a_broken_rubric_names_the_file_and_the_key(course: Course, change, key) -> None:
    old, new = change
    assert old in RUBRIC
    path = _rubric(course, RUBRIC.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_questions(course, "hw1")
    assert str(path) in str(info.value)
    assert key in str(info.value)


def test_a_question_without_items_or_a_missing_question_is_an_error(course: Course) -> None:
    _rubric(course, RUBRIC.split("[question.flops.items]")[0])
    with pytest.raises(ConfigError, match="question.flops.items"):
        load_questions(course, "hw1")
    _rubric(course, RUBRIC.split("[question.flops]")[0])
    with pytest.raises(ConfigError, match=r"question.flops: missing \(asked in .*cell 7"):
        load_questions(course, "hw1")


def test_answer_cells_without_a_rubric_stop_the_grader(course: Course) -> None:
    rubric_path(course, "hw1").unlink()
    with pytest.raises(ConfigError, match="rubric file .*rubric.toml does not exist"):
        load_questions(course, "hw1")


@pytest.mark.parametrize(("metadata", "problem"), [
    ({"id": "two words", "points": 1}, "question id 'two words'"),
    ({"id": "flops", "points": 0}, "points must be a number above 0"),
    ({"id": "flops", "points": True}, "points must be a number above 0"),
    ({"id": "flops", "points": 1, "figure": "no-such-cell"}, "no cell has the id"),
    ({"id": "roofline", "points": 2}, "asked twice"),
])
def test_a_broken_answer_cell_names_the_notebook_and_cell(course: Course, metadata, problem):
    path = course.reference_notebook("hw1")
    nb = nbformat.read(path, as_version=4)
    nb.cells[-1].metadata["nncourse"]["question"] = metadata
    nbformat.write(nb, path)
    with pytest.raises(ConfigError) as info:
        load_questions(course, "hw1")
    assert f"{path}, cell 7" in str(info.value) and problem in str(info.value)


# -- answers ------------------------------------------------------------------------------


def _read(course: Course, tmp_path: Path, nb: nbformat.NotebookNode):
    path = write_submission(tmp_path / "subs", "someone", nb)
    return {a.question: a for a in read_answers(path, load_questions(course, "hw1"))}


def test_answers_are_found_by_their_metadata_not_their_place(course: Course,
                                                             tmp_path: Path) -> None:
    nb = answered(course, GOOD)
    nb.cells.reverse()  # every cell moved
    answers = _read(course, tmp_path, nb)
    assert answers["roofline"].text == GOOD["roofline"]
    assert answers["flops"].text == GOOD["flops"]
    assert answers["roofline"].figure == figure_png()  # the figure cell's PNG kept with it
    assert answers["flops"].figure is None
    assert not any(a.flag or a.missing for a in answers.values())


def test_the_hash_changes_with_the_text_or_the_figure(course: Course, tmp_path: Path) -> None:
    first = _read(course, tmp_path, answered(course, GOOD))["roofline"]
    same = _read(course, tmp_path, answered(course, GOOD))["roofline"]
    other_figure = _read(course, tmp_path, answered(course, GOOD, figure_png(5)))["roofline"]
    other_text = _read(course, tmp_path, answered(course, {**GOOD, "roofline": "Both."}))
    assert first.sha256 == same.sha256
    assert len({first.sha256, other_figure.sha256, other_text["roofline"].sha256}) == 3


def test_a_missing_or_untouched_answer_is_no_answer(course: Course, tmp_path: Path) -> None:
    nb = answered(course, {"roofline": "   "})  # flops keeps the stub, roofline is blank
    answers = _read(course, tmp_path, nb)
    assert all(a.missing and a.flag.startswith("no answer") for a in answers.values())
    nb.cells = [c for c in nb.cells if "nncourse" not in c.metadata]
    answers = _read(course, tmp_path, nb)
    assert answers["flops"].flag == "no answer: no cell carries this question"


def test_a_duplicated_answer_cell_is_the_first_flagged(course: Course, tmp_path: Path) -> None:
    nb = answered(course, GOOD)
    nb.cells.append(nbformat.v4.new_markdown_cell("second", metadata={
        "nncourse": {"question": {"id": "flops", "points": 100}}}))  # points of its own: ignored
    flops = _read(course, tmp_path, nb)["flops"]
    assert flops.text == GOOD["flops"]
    assert flops.flag == "2 cells carry this question; the first is marked"


def test_a_long_answer_is_cut_and_flagged(course: Course, tmp_path: Path) -> None:
    flops = _read(course, tmp_path, answered(course, {"flops": "x" * (ANSWER_CHARS + 50)}))
    assert len(flops["flops"].text) == ANSWER_CHARS
    assert "cut to its first 20,000 characters" in flops["flops"].flag


def _with_figure_output(course: Course, data: dict[str, object]) -> nbformat.NotebookNode:
    nb = answered(course, GOOD, None)
    figure = next(c for c in nb.cells if c.get("id") == "roofline-figure")
    figure.outputs = [nbformat.v4.new_output("display_data", data=data)]
    return nb


@pytest.mark.parametrize(("data", "flag"), [
    ({"text/plain": "<Figure>"}, "has no PNG output"),
    ({"image/png": base64.b64encode(b"GIF89a not a png").decode()}, "not a PNG"),
    ({"image/png": "A" * (FIGURE_BYTES * 4 // 3 + 100)}, "larger than 2,000,000 bytes"),
])
def test_a_figure_that_cannot_be_kept_is_left_out_and_flagged(course, tmp_path, data, flag):
    roofline = _read(course, tmp_path, _with_figure_output(course, data))["roofline"]
    assert roofline.figure is None and flag in roofline.flag
    assert roofline.text == GOOD["roofline"] and not roofline.missing


def test_a_file_that_is_not_a_notebook_answers_nothing(course: Course, tmp_path: Path) -> None:
    questions = load_questions(course, "hw1")
    for content in (b"{not json", b"[]", json.dumps({"cells": 3}).encode(), b"\xff\xfe"):
        path = tmp_path / "broken.ipynb"
        path.write_bytes(content)
        assert all(a.missing for a in read_answers(path, questions)), content


def test_a_symbolic_link_is_not_followed(course: Course, tmp_path: Path) -> None:
    target = write_submission(tmp_path / "subs", "other", answered(course, GOOD))
    link = tmp_path / "link.ipynb"
    os.symlink(target, link)
    answers = read_answers(link, load_questions(course, "hw1"))
    assert all(a.missing and "cannot be read" in a.flag for a in answers)


def test_a_huge_file_is_not_read(course: Course, tmp_path: Path) -> None:
    path = tmp_path / "huge.ipynb"
    with path.open("wb") as f:
        f.truncate(ANSWERS_NOTEBOOK_BYTES + 1)  # sparse: costs no disk
    answers = read_answers(path, load_questions(course, "hw1"))
    assert all("larger than" in a.flag for a in answers)


def test_a_students_notebook_says_what_it_answers_without_the_rubric(course: Course) -> None:
    # `grader check` (the student's kit has no rubric.toml) reads the answer cells alone
    from grader.course.questions import answers_in

    asked = answers_in(answered(course, {"roofline": GOOD["roofline"]}, figure=None))
    assert [(qid, points) for qid, points, _ in asked] == [("roofline", 2.0), ("flops", 1.0)]
    roofline, flops = (answer for _, _, answer in asked)
    assert not roofline.missing and roofline.text == GOOD["roofline"]
    assert "roofline-figure" in roofline.flag and "no PNG output" in roofline.flag
    assert flops.missing and "left as given" in flops.flag
    with_figure = answers_in(answered(course, GOOD))
    assert [a.flag for _, _, a in with_figure] == ["", ""]
    assert answers_in({"cells": [{"metadata": {"nncourse": {"question": {"id": "x"}}}}]}) == ()
