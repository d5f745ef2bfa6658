"""A whole grading run on a small course: resume, regrade, nothing lost, one run at a time."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import write_notebook

from grader.cli.main import main
from grader.course.config import load_course
from grader.pipeline.run import Progress, grade_all
from grader.pipeline.store import locked, open_gradebook
from grader.records import Status, Submission

pytestmark = pytest.mark.kernel

CHECKS = '''
import pytest

@pytest.mark.points(2)
def test_double(student, rng):
    n = rng.randrange(1000)
    assert student.call("double", n) == 2 * n, "double(n) should be 2 n"
'''

COURSE = '''
[course]
name = "Tiny course"
timezone = "Europe/Moscow"
last_lecture_day = 2026-12-08

[limits]
cell_timeout_s = 5
notebook_timeout_s = 30
call_timeout_s = 10

[[assignment]]
id = "hw1"
title = "Doubling"
lecture_day = 2026-11-03
notebook = "hw1.ipynb"
'''


@pytest.fixture
def course(tmp_path) -> Path:
    root = tmp_path / "course"
    checks = root / "solutions" / "hw1" / "checks"
    checks.mkdir(parents=True)
    (checks / "test_double.py").write_text(CHECKS)
    (root / "course.toml").write_text(COURSE)
    return root / "course.toml"


def _submit(root: Path, student: str, source: str, stamp: str | None = "2026-11-04 10:00 "
            "Europe/Moscow") -> Path:
    path = write_notebook(root / student / "hw1" / "hw1.ipynb", source)
    if stamp is not None:
        (path.parent / "timestamp.txt").write_text(stamp)
    return path


@pytest.fixture
def submissions(tmp_path) -> Path:
    root = tmp_path / "subs"
    _submit(root, "alice", "def double(n):\n    return 2 * n")
    _submit(root, "bob", "def double(n):\n    return n + n + 1")
    (root / "carol" / "hw1").mkdir(parents=True)
    (root / "carol" / "hw1" / "hw1.ipynb").write_text("{broken")
    return root


def test_a_run_grades_everything_and_a_rerun_keeps_it(tmp_path, course, submissions):
    book_path = tmp_path / "g.sqlite"
    c = load_course(course)
    with locked(book_path) as book:
        first = grade_all(c, submissions, book, seed=3)
    rows = {g.row.student: g.row for g in first}
    assert (rows["alice"].raw, rows["bob"].raw, rows["carol"].raw) == (100.0, 0.0, 0.0)
    assert rows["carol"].status is Status.MALFORMED and rows["alice"].final == 100.0
    assert all(r.seed == 3 for r in rows.values())

    with locked(book_path) as book:
        second = grade_all(c, submissions, book)
    assert all(g.skipped for g in second)
    assert [g.row for g in second] == [g.row for g in first]

    # a new timestamp re-scores without running anything; new content is graded
    (submissions / "alice" / "hw1" / "timestamp.txt").write_text("2026-11-05 10:00 Europe/Moscow")
    _submit(submissions, "bob", "def double(n):\n    return 2 * n")
    with locked(book_path) as book:
        third = {g.row.student: g for g in grade_all(c, submissions, book)}
        assert len(book.rows()) == 4  # bob's two versions are both kept
    assert third["alice"].skipped and third["alice"].row.cap == 75.0
    assert third["alice"].row.graded_at == rows["alice"].graded_at
    assert not third["bob"].skipped and third["bob"].row.raw == 100.0

    with locked(book_path) as book:
        forced = grade_all(c, submissions, book, force=True)
    assert not any(g.skipped for g in forced)


def _grader(*args: str) -> list[str]:
    return [sys.executable, "-c", "from grader.cli.main import main; main()", *args]


def test_killed_mid_batch_then_rerun_loses_nothing(tmp_path, course, submissions):
    for i in range(3):
        _submit(submissions, f"zed{i}", "import time\ntime.sleep(1)\ndef double(n):\n"
                                        "    return 2 * n")
    book = tmp_path / "g.sqlite"
    # one worker: a dying pool worker is test_a_worker_that_dies_costs_only_what_it_held's
    args = _grader("grade", str(submissions), "--course", str(course), "--gradebook", str(book),
                   "--jobs", "1", "--csv", str(tmp_path / "g.csv"), "--feedback",
                   str(tmp_path / "fb"))
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    done = 0
    for line in proc.stderr:  # kill it right after the second submission is stored
        done += ": checks " in line
        if done == 2:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    db = sqlite3.connect(book)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    kept = dict(db.execute("SELECT student, graded_at FROM grades").fetchall())
    db.close()
    assert 2 <= len(kept) < 6

    rerun = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    with open_gradebook(book) as g:
        rows = g.rows()
    assert sorted(r.student for r in rows) == ["alice", "bob", "carol", "zed0", "zed1", "zed2"]
    assert all(r.graded_at == kept[r.student] for r in rows if r.student in kept)
    assert (tmp_path / "g.csv").read_text().count("\n") == 7


def test_a_second_run_on_the_same_gradebook_is_refused(tmp_path, course, submissions):
    book = tmp_path / "g.sqlite"
    with locked(book):
        result = CliRunner().invoke(main, ["grade", str(submissions), "--course", str(course),
                                           "--gradebook", str(book)])
    assert result.exit_code == 2
    assert "another grader run" in result.output


def test_grade_command_writes_csv_and_feedback(tmp_path, course, submissions):
    out = tmp_path / "out"
    start = time.monotonic()
    result = CliRunner().invoke(main, ["grade", str(submissions), "--course", str(course),
                                       "--gradebook", str(out / "g.sqlite"), "--jobs", "1",
                                       "--csv", str(out / "g.csv"),
                                       "--feedback", str(out / "fb")])
    assert result.exit_code == 0, result.output
    assert time.monotonic() - start < 120
    lines = (out / "g.csv").read_text().splitlines()
    assert lines[0].startswith("student,name,email,hw1_raw,hw1_cap,hw1_final,hw1_status")
    assert [ln.split(",")[0] for ln in lines[1:]] == ["alice", "bob", "carol"]
    feedback = (out / "fb" / "bob" / "hw1.md").read_text()
    assert "double(n) should be 2 n" in feedback
    # the summary table whole, though stdout is not a terminal; only the gradebook left
    assert "malformed" in result.output and "carol" in result.output
    assert sorted(p.name for p in out.glob("g.sqlite*")) == ["g.sqlite"]
    assert "double(n) should be 2 n" in (out / "fb" / "bob" / "hw1.html").read_text()


def test_parallel_grading_gives_the_same_grades(tmp_path, course, submissions):
    c = load_course(course)
    with locked(tmp_path / "seq.sqlite") as book:
        sequential = grade_all(c, submissions, book, seed=9)
    with locked(tmp_path / "par.sqlite") as book:
        parallel = grade_all(c, submissions, book, seed=9, jobs=2)
        stored = book.rows()
    assert [g.submission for g in parallel] == [g.submission for g in sequential]
    assert [(g.row.status, g.row.raw, g.row.checks) for g in parallel] == \
        [(g.row.status, g.row.raw, g.row.checks) for g in sequential]
    assert len(stored) == 3


class _KillWorkersAt(Progress):
    """Kills every worker process as soon as ``victim``'s submission is handed out."""

    def __init__(self, victim: str) -> None:
        self.victim = victim

    def started(self, sub: Submission) -> None:
        if sub.student == self.victim:
            for child in multiprocessing.active_children():
                os.kill(child.pid, signal.SIGKILL)


def test_a_worker_that_dies_costs_only_what_it_held(tmp_path, course, submissions):
    for student in ("dave", "erin", "fay"):
        _submit(submissions, student, "def double(n):\n    return 2 * n")
    with locked(tmp_path / "gb.sqlite") as book:
        graded = grade_all(load_course(course), submissions, book, seed=3, jobs=2,
                           progress=_KillWorkersAt("dave"))
        stored = {r.student: r for r in book.rows()}
    assert set(stored) == {"alice", "bob", "carol", "dave", "erin", "fay"}
    lost = {s for s, r in stored.items() if r.status is Status.GRADER_ERROR}
    assert "dave" in lost and len(lost) <= 2  # dave, and whatever the other worker held
    assert all("worker process died" in stored[s].detail for s in lost)
    for student in {"alice", "erin", "fay"} - lost:
        assert stored[student].raw == 100.0 and stored[student].status is Status.OK
    assert len(graded) == 6


def test_one_worker_grades_its_homework_with_one_session_of_checks(tmp_path, course,
                                                                    submissions, monkeypatch):
    from grader.pipeline import checking as check

    sessions: list[int] = []
    real = check._pytest

    def counting(check_dir, *plugins, collect_only=False):
        sessions.append(collect_only)
        return real(check_dir, *plugins, collect_only=collect_only)

    monkeypatch.setattr(check, "_pytest", counting)
    with locked(tmp_path / "gb.sqlite") as book:
        graded = grade_all(load_course(course), submissions, book, seed=3, jobs=1)
    assert [g.row.raw for g in graded] == [100.0, 0.0, 0.0]
    # one collection to validate the checks, one serving session for all three notebooks
    assert sessions.count(False) == 1


def _channel_root(place, answer) -> None:
    """In a worker: the root of the fork server its kernels would come from, given ``place``."""
    from grader.kernel import zygote

    zygote.share({place.sandboxed: place})
    answer.send(str(zygote.channel_for(place.sandboxed).place.root))


def _in_worker(place) -> str:
    # how grader.pipeline.pool starts its workers
    context = multiprocessing.get_context("forkserver")
    mine, theirs = context.Pipe()
    worker = context.Process(target=_channel_root, args=(place, theirs))
    worker.start()
    theirs.close()  # the worker's end: a worker that fails then reads as EOF here, not a hang
    assert mine.poll(120), "the worker sent nothing"
    root = mine.recv()
    worker.join(30)
    return root


def test_workers_fork_their_kernels_from_the_runs_one_fork_server(tmp_path, course):
    from grader.kernel import zygote
    from grader.kernel.sandbox import use_sandbox

    sandboxed, _ = use_sandbox(load_course(course).limits)
    place = zygote.start(sandboxed).wait_ready()
    # a worker given the run's fork server connects to it
    assert _in_worker(place) == str(place.root)
    # one given a fork server that is gone starts its own, and stops it when it is done
    gone = zygote.Place(tmp_path / "gone", sandboxed)
    own = _in_worker(gone)
    assert own not in (str(place.root), str(gone.root))
    assert not Path(own).exists()
