"""Shared helpers for the project's tests."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
import torch

from grader.records import Status
from grader.tools.audit import CONSTANTS_FILE
from grader.tools.harness import live_kernel

REPO = Path(__file__).resolve().parents[1]

# the shared homework tests live in a helper module: pytest rewrites its asserts only if told
pytest.register_assert_rewrite("homework_suite")

# One thread everywhere (HOMEWORK_NOTES P1): the grader process shares 2 cores with kernels.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


def write_notebook(path: Path, *sources: str, markdown_first: bool = False) -> Path:
    """Write a notebook whose code cells hold ``sources``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    if markdown_first:
        nb.cells.append(nbformat.v4.new_markdown_cell("# A notebook"))
    nb.cells += [nbformat.v4.new_code_cell(s) for s in sources]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


@pytest.fixture
def repo() -> Path:
    return REPO


def constants_source(assignment: str) -> str:
    """The "public answers as constants" cell of a homework (``grader audit`` reads it too)."""
    return (REPO / "solutions" / assignment / CONSTANTS_FILE).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def reference(request: pytest.FixtureRequest):
    """(session, student) of a live kernel that ran the reference notebook of the test module's
    ``HOMEWORK`` (tests/homework_suite.py) under its limits, shared by the module's tests."""
    homework = request.module.HOMEWORK
    with live_kernel(homework.reference, homework.limits) as live:
        assert live.execution.status is Status.OK, live.execution.detail
        yield live.session, live.student


@pytest.fixture(scope="module")
def hw(request: pytest.FixtureRequest):
    """The test module's ``HOMEWORK`` (tests/homework_suite.py)."""
    return request.module.HOMEWORK


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # the shared homework tests run over the wrong versions of their module's homework
    if "wrong_version" in metafunc.fixturenames:
        metafunc.parametrize("wrong_version", metafunc.module.HOMEWORK.wrong_versions())
