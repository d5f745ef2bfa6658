"""Tests for grader/ship/student_notebooks.py: solution regions become stubs; student notebooks
lose outputs."""

from __future__ import annotations

import nbformat
import pytest

from grader.course.notebook import METADATA_KEY, assignment_of
from grader.errors import ReleaseError
from grader.ship.student_notebooks import CODE_STUB, MARKDOWN_STUB, strip_regions, student_version

STUB = "# YOUR CODE HERE\nraise NotImplementedError()"


def lines(*parts: str) -> str:
    return "\n".join(parts)


@pytest.mark.parametrize(
    ("source", "stub", "expected"),
    [
        pytest.param(
            lines("def f(x):", "    ### BEGIN SOLUTION", "    y = x + 1", "    return y",
                  "    ### END SOLUTION"),
            CODE_STUB,
            lines("def f(x):", "    # YOUR CODE HERE", "    raise NotImplementedError()"),
            id="indented-function-body"),
        pytest.param(
            lines("### BEGIN SOLUTION", "x = 1", "### END SOLUTION", "print(x)"),
            CODE_STUB,
            lines("# YOUR CODE HERE", "raise NotImplementedError()", "print(x)"),
            id="top-level"),
        pytest.param(
            lines("class A:", "    def f(self):", "        ### BEGIN SOLUTION", "        return 1",
                  "        ### END SOLUTION", "", "    def g(self):", "\t### BEGIN SOLUTION",
                  "\treturn 2", "\t### END SOLUTION", "", "A().f()"),
            CODE_STUB,
            lines("class A:", "    def f(self):", "        # YOUR CODE HERE",
                  "        raise NotImplementedError()", "", "    def g(self):",
                  "\t# YOUR CODE HERE", "\traise NotImplementedError()", "", "A().f()"),
            id="several-regions-deep-and-tab-indent"),
        pytest.param(
            lines("import torch", "    ### BEGIN SOLUTION   ", "    secret()", "### END SOLUTION"),
            CODE_STUB,
            lines("import torch", "    # YOUR CODE HERE", "    raise NotImplementedError()"),
            id="markers-with-surrounding-spaces"),
        pytest.param(
            lines("**Question.** Why is depth-wise cheaper?", "", "### BEGIN SOLUTION",
                  "It does k*k*C MACs per pixel, not k*k*C*C.", "### END SOLUTION"),
            MARKDOWN_STUB,
            lines("**Question.** Why is depth-wise cheaper?", "", "YOUR ANSWER HERE"),
            id="markdown-stub"),
        pytest.param(
            lines("x = 1", "# ### BEGIN SOLUTION is only a marker on its own line", "y = 2"),
            CODE_STUB,
            lines("x = 1", "# ### BEGIN SOLUTION is only a marker on its own line", "y = 2"),
            id="marker-text-inside-a-comment"),
        pytest.param("x = 1\ny = 2", CODE_STUB, "x = 1\ny = 2", id="no-region"),
        pytest.param("", CODE_STUB, "", id="empty"),
    ],
)
def test_strip_regions(source: str, stub: tuple[str, ...], expected: str) -> None:
    assert strip_regions(source, stub, "ref.ipynb, cell 1") == expected


@pytest.mark.parametrize(
    ("source", "line"),
    [
        pytest.param(lines("x = 1", "### END SOLUTION"), 2, id="end-without-begin"),
        pytest.param(lines("### BEGIN SOLUTION", "x = 1", "    ### BEGIN SOLUTION", "y = 2",
                           "### END SOLUTION", "### END SOLUTION"), 3, id="begin-inside-begin"),
        pytest.param(lines("### BEGIN SOLUTION", "x = 1", "### END SOLUTION", "### END SOLUTION"),
                     4, id="end-twice"),
        pytest.param(lines("x = 1", "y = 2", "### BEGIN SOLUTION", "z = 3"), 3,
                     id="begin-without-end"),
    ],
)
def test_unbalanced_markers_name_cell_and_line(source: str, line: int) -> None:
    with pytest.raises(ReleaseError) as info:
        strip_regions(source, CODE_STUB, "solutions/hw1/hw1.ipynb, cell 7")
    message = str(info.value)
    assert "solutions/hw1/hw1.ipynb, cell 7" in message
    assert f"line {line}" in message


def reference_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    intro = nbformat.v4.new_markdown_cell("# HA 1\nCount the MACs.")
    task = nbformat.v4.new_code_cell(
        lines("def macs(layer):", "    ### BEGIN SOLUTION", "    return 42",
              "    ### END SOLUTION"),
        execution_count=3,
        outputs=[nbformat.v4.new_output("stream", name="stdout", text="42\n")],
        metadata={"execution": {"iopub.status.idle": "2026-11-01T10:00:00Z"}, "tags": ["task"]})
    check = nbformat.v4.new_code_cell(
        "assert macs(None) == 42", execution_count=4,
        outputs=[nbformat.v4.new_output("execute_result", data={"text/plain": "True"},
                                        execution_count=4)])
    answer = nbformat.v4.new_markdown_cell(lines("Why?", "### BEGIN SOLUTION", "Because.",
                                                 "### END SOLUTION"))
    raw = nbformat.v4.new_raw_cell(lines("### BEGIN SOLUTION", "raw cells are left alone"))
    nb.cells = [intro, task, check, answer, raw]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    return nb


def test_student_version() -> None:
    reference = reference_notebook()
    student = student_version(reference, "solutions/hw1/hw1.ipynb")
    intro, task, check, answer, raw = student.cells
    assert intro.source == "# HA 1\nCount the MACs."
    assert task.source == lines("def macs(layer):", "    # YOUR CODE HERE",
                                "    raise NotImplementedError()")
    assert check.source == "assert macs(None) == 42"
    assert answer.source == "Why?\nYOUR ANSWER HERE"
    assert raw.source == reference.cells[4].source
    for cell in (task, check):
        assert cell.outputs == []
        assert cell.execution_count is None
        assert "execution" not in cell.metadata
    assert task.metadata["tags"] == ["task"]  # other metadata is kept
    assert student.metadata == reference.metadata
    nbformat.validate(student)


def test_student_version_does_not_modify_its_input() -> None:
    reference = reference_notebook()
    before = nbformat.writes(reference)
    student = student_version(reference, "ref.ipynb")
    assert nbformat.writes(reference) == before
    assert student is not reference
    assert all(a is not b for a, b in zip(student.cells, reference.cells, strict=True))


def test_student_version_is_deterministic() -> None:
    reference = reference_notebook()
    first = nbformat.writes(student_version(reference, "ref.ipynb"))
    second = nbformat.writes(student_version(reference, "ref.ipynb"))
    assert first == second


def test_student_version_error_names_notebook_cell_and_line() -> None:
    reference = reference_notebook()
    reference.cells[2].source = lines("x = 1", "### END SOLUTION")
    with pytest.raises(ReleaseError) as info:
        student_version(reference, "solutions/hw1/hw1.ipynb")
    message = str(info.value)
    assert "solutions/hw1/hw1.ipynb, cell 3" in message
    assert "line 2" in message


# --- which homework a notebook is -------------------------------------------------------------

def test_release_notebooks_writes_the_homework_id_into_each_student_notebook(repo) -> None:
    from grader.course.config import load_course

    course = load_course(repo / "course.toml")
    for a in course.assignments:
        nb = nbformat.read(course.student_notebook(a.id), as_version=4)
        assert nb.metadata[METADATA_KEY] == {"assignment": a.id}


def test_student_version_writes_the_id_only_when_given() -> None:
    tagged = student_version(reference_notebook(), "ref.ipynb", "hw3")
    assert tagged.metadata[METADATA_KEY] == {"assignment": "hw3"}
    assert METADATA_KEY not in student_version(reference_notebook(), "ref.ipynb").metadata


def tagged(assignment: object) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    if assignment is not None:
        nb.metadata[METADATA_KEY] = {"assignment": assignment}
    return nb


@pytest.mark.parametrize(
    ("relative", "assignment", "expected"),
    [
        pytest.param("Downloads/hw1.ipynb", "hw1", "hw1", id="metadata-anywhere"),
        pytest.param("Downloads/hw1 (2).ipynb", "hw2", "hw2", id="metadata-beats-a-renamed-file"),
        pytest.param("hw3/hw1.ipynb", "hw2", "hw2", id="metadata-beats-name-and-folder"),
        pytest.param("Downloads/hw4.ipynb", None, "hw4", id="file-name-fallback"),
        pytest.param("hw5/my work.ipynb", None, "hw5", id="folder-fallback"),
        pytest.param("hw6/hw2.ipynb", None, "hw2", id="file-name-before-folder"),
    ],
)
def test_assignment_of(repo, tmp_path, relative: str, assignment: str | None,
                       expected: str) -> None:
    from grader.course.config import load_course

    course = load_course(repo / "course.toml")
    assert assignment_of(course, tmp_path / relative, tagged(assignment)) == expected


@pytest.mark.parametrize(
    ("relative", "assignment", "words"),
    [
        pytest.param("hw1/hw1.ipynb", "hw9", ["'hw9'", "does not have"], id="unknown-id"),
        pytest.param("hw1/hw1.ipynb", 7, ["7", "does not have"], id="id-not-a-string"),
        pytest.param("Downloads/mine.ipynb", None, ["cannot tell", "'mine.ipynb'",
                                                    "'Downloads'"], id="nothing-tells"),
    ],
)
def test_assignment_of_refuses_with_the_reason(repo, tmp_path, relative: str, assignment: object,
                                               words: list[str]) -> None:
    from grader.course.config import ConfigError, load_course

    course = load_course(repo / "course.toml")
    with pytest.raises(ConfigError) as info:
        assignment_of(course, tmp_path / relative, tagged(assignment))
    assert str(tmp_path / relative) in str(info.value)
    for word in words:
        assert word in str(info.value)
