"""The execute stage on tiny fixture notebooks: every way a run ends is a status."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import write_notebook

from grader.course.notebook import read_notebook
from grader.errors import StudentError
from grader.kernel.protocol import Student
from grader.pipeline.execute import execute
from grader.records import Limits, Status

FIXTURES = Path(__file__).with_name("fixtures")
FAST = Limits(cell_timeout_s=30, notebook_timeout_s=60, call_timeout_s=10)
# for the notebooks that loop: they import nothing, so a short cell limit is safe under load
SHORT = Limits(cell_timeout_s=3, notebook_timeout_s=30, call_timeout_s=10)

pytestmark = pytest.mark.kernel


def _student(session) -> Student:
    session.install_bridge(10)
    return Student(session.request, FAST.call_timeout_s)


def test_correct_notebook_runs_and_keeps_its_kernel():
    with execute(FIXTURES / "correct.ipynb", FAST) as (execution, session):
        assert execution.status is Status.OK
        assert execution.cells_run == 2
        assert _student(session).call("double", 21) == 42


def test_a_raising_cell_is_reported_and_later_cells_still_run():
    with execute(FIXTURES / "raises.ipynb", FAST) as (execution, session):
        assert execution.status is Status.CELL_ERROR
        assert "ValueError: student bug" in execution.detail
        assert _student(session).call("triple", 2) == 6


def test_an_endless_cell_times_out_and_is_interrupted():
    start = time.monotonic()
    with execute(FIXTURES / "loops.ipynb", SHORT) as (execution, session):
        assert execution.status is Status.CELL_TIMEOUT
        assert "cell 2" in execution.detail
        assert _student(session).call("triple", 2) == 6  # the cell after the loop ran
    assert time.monotonic() - start < 25


def test_whole_notebook_limit(tmp_path):
    loop = "while True:\n    pass"
    path = write_notebook(tmp_path / "loops3.ipynb", loop, loop, loop, "x = 1")
    limits = Limits(cell_timeout_s=2, notebook_timeout_s=5, call_timeout_s=3)
    with execute(path, limits) as (execution, session):
        assert execution.status is Status.NOTEBOOK_TIMEOUT
        assert session is None


def test_a_kernel_that_exits_is_a_status():
    with execute(FIXTURES / "autokill.ipynb", FAST) as (execution, session):
        assert execution.status is Status.KERNEL_DIED
        assert "cell 2" in execution.detail
        assert session is None


@pytest.mark.parametrize("name, content, reason", [
    ("broken.ipynb", '{"cells": [', "not a valid notebook"),
    ("empty.ipynb", "", "not a valid notebook"),
    ("binary.ipynb", b"\x89PNG\r\n\x1a\n\x00\x00", "not a valid notebook"),
])
def test_malformed_files(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with execute(path, FAST) as (execution, session):
        assert execution.status is Status.MALFORMED
        assert reason in execution.detail and name in execution.detail
        assert session is None


def test_fixture_malformed_notebook():
    with execute(FIXTURES / "malformed.ipynb", FAST) as (execution, _):
        assert execution.status is Status.MALFORMED


def test_read_notebook_rejects_other_languages_and_no_code(tmp_path):
    path = write_notebook(tmp_path / "r.ipynb", "x <- 1")
    nb = path.read_text().replace('"language": "python"', '"language": "R"')
    path.write_text(nb)
    with pytest.raises(ValueError, match="R notebook"):
        read_notebook(path)
    import nbformat

    empty = nbformat.v4.new_notebook()
    empty.cells = [nbformat.v4.new_markdown_cell("only text")]
    nbformat.write(empty, tmp_path / "t.ipynb")
    with pytest.raises(ValueError, match="no code cells"):
        read_notebook(tmp_path / "t.ipynb")


def test_huge_output_is_truncated(tmp_path):
    path = write_notebook(tmp_path / "loud.ipynb", "for i in range(20000):\n    print('x' * 100)",
                          "def ok():\n    return 1")
    limits = Limits(cell_timeout_s=20, notebook_timeout_s=40, max_output_chars=10_000)
    with execute(path, limits) as (execution, session):
        assert execution.output_truncated
        assert execution.status is Status.OK
        assert Student(session.request, 5).call if session else None


def test_a_call_that_hangs_fails_alone_and_the_kernel_recovers(tmp_path):
    path = write_notebook(tmp_path / "slow.ipynb",
                          "import time\ndef slow():\n    time.sleep(60)\ndef fast():\n    return 7")
    with execute(path, FAST) as (_, session):
        student = _student(session)
        start = time.monotonic()
        with pytest.raises(StudentError, match="did not finish within 10"):
            student.call("slow")
        assert time.monotonic() - start < 20
        assert student.call("fast") == 7


def test_a_call_that_ignores_interrupts_gives_up_the_kernel(tmp_path):
    source = ("def stubborn():\n    while True:\n        try:\n            while True:\n"
              "                pass\n        except KeyboardInterrupt:\n            pass\n"
              "def fast():\n    return 7")
    path = write_notebook(tmp_path / "stubborn.ipynb", source)
    with execute(path, FAST) as (_, session):
        student = _student(session)
        with pytest.raises(StudentError, match="did not finish"):
            student.call("stubborn")
        start = time.monotonic()
        with pytest.raises(StudentError, match="stopped answering"):
            student.call("fast")
        assert time.monotonic() - start < 2


def test_kernel_works_in_a_copy_without_the_course_repository(tmp_path):
    path = write_notebook(tmp_path / "where.ipynb",
                          "import os, nncourse\ndef where():\n"
                          "    return os.getcwd(), sorted(os.listdir('.')), nncourse.__file__")
    with execute(path, FAST) as (_, session):
        cwd, files, kit = _student(session).call("where")
    assert cwd != str(tmp_path) and files == ["where.ipynb"]
    assert "solutions" not in kit and "/kit/nncourse/" in kit


def test_a_fork_server_that_died_is_started_again_for_the_next_kernel():
    import os
    import signal

    from grader.kernel import zygote
    from grader.kernel.sandbox import use_sandbox

    sandboxed, _ = use_sandbox(FAST)
    with execute(FIXTURES / "correct.ipynb", FAST) as (execution, _):
        assert execution.status is Status.OK
    server = zygote.start(sandboxed)
    process = server._process
    assert process is not None
    os.killpg(process.pid, signal.SIGKILL)  # the zygote, its channels' servers with it
    process.wait()
    with execute(FIXTURES / "correct.ipynb", FAST) as (execution, session):
        assert execution.status is Status.OK, execution.detail
        assert _student(session).call("double", 4) == 8


@pytest.mark.parametrize("sandboxed", [True, False], ids=["sandboxed", "unsandboxed"])
def test_a_fork_server_under_a_deep_temporary_folder_is_reached(tmp_path, monkeypatch,
                                                                 sandboxed):
    # a Unix socket's address holds 108 bytes; a temporary folder can be deeper than that
    import tempfile

    from grader.kernel import zygote
    from grader.kernel.sandbox import use_sandbox

    if sandboxed and not use_sandbox(FAST)[0]:
        pytest.skip("no sandbox here")  # the unsandboxed case still runs
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    server = zygote.Zygote(sandboxed)
    try:
        place = server.wait_ready()
        assert len(str(place.socket)) > 108
        channel = zygote.Channel(place)
        assert channel.ask({"op": "poll", "pid": 1})["exit"] == -1  # not its child: gone
        channel.close()
    finally:
        server.close()
