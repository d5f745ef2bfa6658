"""Grading on a Dask cluster: the same rows as the local pool, nothing lost when a worker dies,
and a worker that cannot see the course is named before anything runs."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import test_pipeline
from click.testing import CliRunner
from test_pipeline import _submit

from grader.cli.main import main
from grader.course.config import load_course
from grader.errors import ClusterError
from grader.pipeline.cluster import worker_problems, worker_view
from grader.pipeline.run import Progress, grade_all
from grader.pipeline.store import locked, open_gradebook
from grader.records import GradeRow, Limits, Status, Submission, Task

course = test_pipeline.course  # the tiny course's fixture

# what may differ between two gradings of the same submission: when, and how long it took
_TIMING = {"graded_at", "seconds", "exec_seconds"}


def _comparable(row: GradeRow) -> dict[str, object]:
    return {k: v for k, v in row.__dict__.items() if k not in _TIMING}


@pytest.fixture
def submissions(tmp_path) -> Path:
    root = tmp_path / "subs"
    _submit(root, "alice", "def double(n):\n    return 2 * n")
    _submit(root, "bob", "def double(n):\n    return n + n + 1")
    _submit(root, "dave", "def double(n):\n    return 2 * n", stamp=None)
    (root / "carol" / "hw1").mkdir(parents=True)
    (root / "carol" / "hw1" / "hw1.ipynb").write_text("{broken")
    return root


@pytest.mark.kernel
def test_a_local_cluster_stores_the_same_rows_as_grading_here(tmp_path, course, submissions):
    # here: one process (test_pipeline shows the local pool stores the same rows as that)
    with locked(tmp_path / "pool.sqlite") as book:
        grade_all(load_course(course), submissions, book, seed=5, jobs=1)
        pool = {(r.student, r.assignment): r for r in book.rows()}

    book = tmp_path / "cluster.sqlite"
    result = CliRunner().invoke(main, [
        "grade", str(submissions), "--course", str(course), "--gradebook", str(book),
        "--seed", "5", "--scheduler", "local", "--jobs", "2", "--csv", str(tmp_path / "g.csv"),
        "--feedback", str(tmp_path / "fb")])
    assert result.exit_code == 0, result.output
    with open_gradebook(book) as gb:
        cluster = {(r.student, r.assignment): r for r in gb.rows()}

    assert sorted(cluster) == sorted(pool) == [(s, "hw1") for s in ("alice", "bob", "carol",
                                                                     "dave")]
    for key, row in cluster.items():
        assert _comparable(row) == _comparable(pool[key]), key
    assert cluster["alice", "hw1"].raw == 100.0 and cluster["bob", "hw1"].raw == 0.0
    assert cluster["carol", "hw1"].status is Status.MALFORMED
    assert (tmp_path / "g.csv").read_text().count("\n") == 5


class _KillTheWorkerOf(Progress):
    """When ``victim``'s task is handed out, a thread waits until a worker is grading it and
    kills that worker's process (SIGKILL), once."""

    def __init__(self, address: str, victim: str) -> None:
        self.address, self.victim = address, victim
        self.killed: list[tuple[str, int]] = []
        self.thread: threading.Thread | None = None

    def started(self, sub: Submission) -> None:
        if sub.student == self.victim:
            self.thread = threading.Thread(target=self._kill, daemon=True)
            self.thread.start()

    def _kill(self) -> None:
        from distributed import Client

        with Client(self.address, timeout=20) as client:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                for worker, keys in client.processing().items():
                    if any(f"-{self.victim}-" in str(key) for key in keys):
                        pid = client.run(os.getpid, workers=[worker])[worker]
                        os.kill(pid, signal.SIGKILL)
                        self.killed.append((worker, pid))
                        return
                time.sleep(0.1)


@pytest.mark.kernel
def test_a_worker_killed_mid_run_loses_nothing(tmp_path, course, submissions):
    from distributed import LocalCluster

    # erin's notebook takes a while, so that her worker is killed while it grades her
    _submit(submissions, "erin", "import time\ntime.sleep(4)\ndef double(n):\n    return 2 * n")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, \
            locked(tmp_path / "gb.sqlite") as book:
        killer = _KillTheWorkerOf(cluster.scheduler_address, "erin")
        graded = grade_all(load_course(course), submissions, book, seed=3,
                           scheduler=cluster.scheduler_address, progress=killer)
        stored = {r.student: r for r in book.rows()}
    assert killer.killed, "the test never saw erin's task on a worker"
    assert len(graded) == 5
    assert set(stored) == {"alice", "bob", "carol", "dave", "erin"}
    # the scheduler gave erin's task to another worker, which graded it in full
    assert stored["erin"].status is Status.OK and stored["erin"].raw == 100.0
    assert stored["alice"].raw == 100.0 and stored["bob"].raw == 0.0


def test_a_worker_that_cannot_see_the_course_is_named():
    ours = worker_view([], Limits(sandbox="off"))
    views = {
        "tcp://10.0.0.2:40000": {**ours, "missing": []},
        "tcp://10.0.0.3:40000": {**ours, "host": "node3",
                                 "missing": ["/shared/course/course.toml", "/shared/subs/a",
                                             "/shared/subs/b", "/shared/subs/c"]},
        "tcp://10.0.0.4:40000": {**ours, "host": "node4", "engine": "0" * 16,
                                 "torch": "2.12.0", "sandbox": "ERROR: the course requires "
                                                               "the kernel sandbox: no bwrap"},
    }
    problems = worker_problems(views, ours)
    assert len(problems) == 4
    assert "tcp://10.0.0.3:40000 (on node3) cannot see /shared/course/course.toml" in problems[0]
    assert "and 1 more" in problems[0] and "same paths" in problems[0]
    assert "another version of the grader" in problems[1]
    assert "torch 2.12.0" in problems[2]
    assert "requires the kernel sandbox" in problems[3]
    assert worker_problems({"tcp://10.0.0.2:40000": ours}, ours) == []


def test_no_scheduler_at_the_address_is_a_usage_error(tmp_path, course, submissions,
                                                      monkeypatch):
    import grader.pipeline.cluster

    monkeypatch.setattr(grader.pipeline.cluster, "CONNECT_TIMEOUT_S", 2.0)
    with locked(tmp_path / "gb.sqlite") as book, pytest.raises(ClusterError) as caught:
        grade_all(load_course(course), submissions, book, seed=1,
                  scheduler="tcp://127.0.0.1:9")
    assert "cannot reach a Dask scheduler at 'tcp://127.0.0.1:9'" in str(caught.value)
    assert caught.value.exit_code == 2
    with open_gradebook(tmp_path / "gb.sqlite") as gb:
        assert gb.rows() == []


def test_a_worker_that_joined_late_without_the_course_fails_the_task_not_the_student(
        tmp_path, course, submissions):
    from grader.pipeline.cluster import _grade, engine_fingerprint
    from grader.pipeline.discover import discover

    c = load_course(course)
    sub = next(s for s in discover(submissions, {"hw1": "hw1.ipynb"}, c.timezone)
               if s.student == "alice")
    elsewhere = Submission(sub.student, sub.assignment, tmp_path / "not-here.ipynb",
                           sub.sha256, sub.submitted_at)
    with pytest.raises(RuntimeError, match="cannot see .*not-here.ipynb"):
        _grade(elsewhere, c, 1, engine_fingerprint())
    with pytest.raises(RuntimeError, match="another version of the grader"):
        _grade(sub, c, 1, "0" * 16)


class _Failed:
    """A finished Dask future whose task raised ``error``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def result(self) -> GradeRow:
        raise self.error


def test_a_failed_task_is_that_submissions_grader_error(course, submissions):
    from distributed import KilledWorker

    from grader.pipeline.cluster import _row
    from grader.pipeline.discover import discover

    c = load_course(course)
    sub = discover(submissions, {"hw1": "hw1.ipynb"}, c.timezone)[0]
    killed = KilledWorker("grade-hw1-alice", SimpleNamespace(address="tcp://10.0.0.3:4000"), 3)
    lost = _row(_Failed(killed), Task(0, sub), c, 7)
    assert lost.status is Status.GRADER_ERROR and "every worker that took it died" in lost.detail
    assert lost.raw == 0.0 and lost.seed == 7 and lost.possible == 2.0
    failed = _row(_Failed(RuntimeError("cannot see /shared")), Task(0, sub), c, 7)
    assert failed.status is Status.GRADER_ERROR and "cannot see /shared" in failed.detail
    with pytest.raises(ClusterError):  # a problem of the course stops the run, as here
        _row(_Failed(ClusterError("bad course")), Task(0, sub), c, 7)
