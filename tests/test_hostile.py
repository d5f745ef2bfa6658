"""Hostile notebooks: each threat from the README's security table, and how it ends.

Every case runs a real kernel through the grader's path (``grade_notebook``) with a small set of
checks, and asserts that the notebook earns no credit beyond what honest work earns, that the
grader and what it guards are unaffected, and that the status says what happened.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO, write_notebook

from grader.kernel.sandbox import use_sandbox
from grader.pipeline.checking import Outcome
from grader.pipeline.grading import grade_notebook
from grader.records import Limits, Status

pytestmark = pytest.mark.kernel

LIMITS = Limits(cell_timeout_s=30, notebook_timeout_s=90, call_timeout_s=10, memory_mb=3072,
                max_output_chars=20_000)
SANDBOXED, SANDBOX_NOTE = use_sandbox(LIMITS)
# Skipped only off CI (a laptop without bubblewrap); in CI a missing sandbox fails below.
needs_sandbox = pytest.mark.skipif(not SANDBOXED and not os.environ.get("CI"),
                                   reason=SANDBOX_NOTE)


@pytest.mark.skipif(not os.environ.get("CI"), reason="CI must have the sandbox; here it may not")
def test_ci_has_the_sandbox():
    assert SANDBOXED, SANDBOX_NOTE

CHECKS = '''
import pytest
import torch

@pytest.mark.points(1)
def test_square(student, rng):
    x = torch.randn(5, generator=torch.Generator().manual_seed(rng.randrange(10**6)))
    got = student.call("square", x)
    assert isinstance(got, torch.Tensor), "square should return a tensor"
    assert torch.equal(got, x * x), "square(x) should be x * x"

@pytest.mark.points(1)
def test_answer(student, rng):
    n = rng.randrange(1000)
    assert student.call("answer", n) == n + 1, "answer(n) should be n + 1"
'''

WRONG = "import torch\ndef square(x):\n    return x + 1\ndef answer(n):\n    return n\n"
RIGHT = "import torch\ndef square(x):\n    return x * x\ndef answer(n):\n    return n + 1\n"


@pytest.fixture
def checks(tmp_path) -> Path:
    folder = tmp_path / "checks"
    folder.mkdir()
    (folder / "test_tiny.py").write_text(CHECKS)
    return folder


def grade(tmp_path: Path, checks: Path, *cells: str, limits: Limits = LIMITS):
    execution, run = grade_run(tmp_path, checks, *cells, limits=limits)
    return execution, {r.name.split("::")[1]: r for r in run.results}


def grade_run(tmp_path: Path, checks: Path, *cells: str, limits: Limits = LIMITS):
    notebook = write_notebook(tmp_path / "sub" / "nb.ipynb", *cells)
    return grade_notebook(notebook, checks, limits, seed=7)


def earned(results) -> float:
    return sum(r.earned for r in results.values())


def test_honest_work_earns_full_marks(tmp_path, checks):
    execution, results = grade(tmp_path, checks, RIGHT)
    assert execution.status is Status.OK and earned(results) == 2


@needs_sandbox
def test_cannot_read_or_list_checks_solutions_or_other_students(tmp_path, checks):
    other = tmp_path / "other_student" / "hw1.ipynb"
    other.parent.mkdir()
    other.write_text("secret")
    probe = (f"import os\ndef look():\n    seen = {{}}\n"
             f"    for p in [{str(REPO / 'solutions')!r}, {str(checks)!r}, {str(other)!r},"
             f" {str(REPO)!r}, {str(tmp_path)!r}]:\n"
             f"        seen[p] = os.path.exists(p)\n"
             f"    seen['listing'] = sorted(os.listdir({str(REPO)!r})) "
             f"if os.path.isdir({str(REPO)!r}) else []\n"
             f"    return seen\n")
    execution, _ = grade(tmp_path, checks, WRONG, probe)
    from grader.kernel.protocol import Student
    from grader.pipeline.execute import execute

    with execute(tmp_path / "sub" / "nb.ipynb", LIMITS) as (_, session):
        session.install_bridge(10)
        seen = Student(session.request, 10).call("look")
    assert not seen[str(REPO / "solutions")] and not seen[str(checks)]
    assert not seen[str(other)] and not seen[str(tmp_path)]
    assert seen["listing"] in ([], [".venv"])  # at most the read-only Python environment


@needs_sandbox
def test_cannot_write_the_gradebook_or_the_csv(tmp_path, checks):
    book = tmp_path / "grades" / "gradebook.sqlite"
    book.parent.mkdir()
    book.write_bytes(b"precious")
    attack = (f"import os\nfor p in [{str(book)!r}, {str(book.with_suffix('.csv'))!r}]:\n"
              f"    try:\n        os.makedirs(os.path.dirname(p), exist_ok=True)\n"
              f"        open(p, 'w').write('hacked')\n    except OSError:\n        pass\n")
    execution, results = grade(tmp_path, checks, WRONG, attack)
    assert book.read_bytes() == b"precious"
    assert not book.with_suffix(".csv").exists()
    assert earned(results) == 0


@pytest.mark.parametrize("patch", [
    "torch.equal = lambda *a, **k: True\ntorch.allclose = lambda *a, **k: True",
    "torch.Tensor.__eq__ = lambda self, other: True",
    "import builtins\nbuiltins.isinstance = lambda *a: True",
    "import sys, types\nsys.modules['pytest'] = types.ModuleType('pytest')",
    "get_ipython().showtraceback = lambda *a, **k: None",
], ids=["torch.equal", "Tensor.__eq__", "builtins", "pytest", "showtraceback"])
def test_monkeypatching_inside_the_kernel_changes_no_verdict(tmp_path, checks, patch):
    execution, results = grade(tmp_path, checks, WRONG, "import torch\n" + patch)
    assert earned(results) == 0
    assert all(r.outcome is Outcome.FAILED for r in results.values())


def test_an_object_that_equals_everything_is_not_data(tmp_path, checks):
    liar = ("class Liar:\n    def __eq__(self, other):\n        return True\n"
            "def answer(n):\n    return Liar()\n"
            "def square(x):\n    return Liar()\n")
    execution, results = grade(tmp_path, checks, liar)
    assert earned(results) == 0
    assert "cannot send a Liar" in results["test_answer"].message


def test_a_crafted_pickle_never_runs_in_the_grader(tmp_path, checks):
    marker = tmp_path / "pwned"
    attack = ("import torch, pickle, os\n"
              "class Boom:\n"
              f"    def __reduce__(self):\n        return (os.system, ('touch {marker}',))\n"
              "def _evil_save(obj, f, *a, **k):\n    f.write(pickle.dumps(Boom()))\n"
              "torch.save = _evil_save\n")
    execution, results = grade(tmp_path, checks, RIGHT, attack)
    assert not marker.exists()
    assert results["test_square"].outcome is Outcome.FAILED
    assert "could not be read safely" in results["test_square"].message


@needs_sandbox
def test_no_network_from_the_kernel(tmp_path, checks):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    connected, graded = threading.Event(), threading.Event()

    def accept():  # until the grading is over: the kernel's attempt lies within it
        while not graded.is_set() and not connected.is_set():
            try:
                server.accept()[0].close()
                connected.set()
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept)
    thread.start()
    attack = (f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), "
              f"timeout=3)\nexcept OSError as exc:\n    print('blocked', exc)\n")
    try:
        execution, _ = grade(tmp_path, checks, RIGHT, attack)
    finally:
        graded.set()
        thread.join()
    assert execution.status is Status.OK  # the attempt ran, and its error was caught
    server.setblocking(False)
    with contextlib.suppress(BlockingIOError):  # a connection still waiting to be accepted
        server.accept()[0].close()
        connected.set()
    server.close()
    assert not connected.is_set()


@needs_sandbox
def test_a_fork_bomb_is_contained(tmp_path, checks):
    bomb = ("import os\nkids = 0\ntry:\n    for _ in range(100000):\n"
            "        if os.fork() == 0:\n            import time\n            time.sleep(30)\n"
            "            os._exit(0)\n        kids += 1\nexcept OSError as exc:\n"
            "    print('fork refused after', kids, exc)\n")
    start = time.monotonic()
    execution, results = grade(tmp_path, checks, RIGHT, bomb)
    assert time.monotonic() - start < 90
    # refused forks end the cell; on a loaded machine the cell may hit its limit first, and
    # a kernel busy forking may not stop when interrupted: the notebook is stopped there
    assert execution.status in (Status.OK, Status.CELL_ERROR, Status.CELL_TIMEOUT,
                                Status.KERNEL_DIED, Status.NOTEBOOK_TIMEOUT)
    # the grader can still start processes and grade the next submission
    again, results = grade(tmp_path / "next", checks, RIGHT)
    assert again.status is Status.OK and earned(results) == 2


def test_a_memory_bomb_is_contained(tmp_path, checks):
    bomb = "blob = bytearray(8 * 1024**3)"
    execution, results = grade(tmp_path, checks, RIGHT, bomb)
    assert execution.status in (Status.CELL_ERROR, Status.KERNEL_DIED)
    if execution.status is Status.CELL_ERROR:
        assert "MemoryError" in execution.detail
        assert earned(results) == 2  # the honest functions still count


def test_a_flood_of_output_is_truncated(tmp_path, checks):
    flood = "for _ in range(200000):\n    print('y' * 1000)"
    execution, results = grade(tmp_path, checks, RIGHT, flood)
    assert execution.output_truncated
    assert execution.status in (Status.OK, Status.CELL_TIMEOUT)
    assert earned(results) == 2


def test_os_exit_is_a_dead_kernel(tmp_path, checks):
    execution, results = grade(tmp_path, checks, RIGHT, "import os\nos._exit(3)")
    assert execution.status is Status.KERNEL_DIED and earned(results) == 0


# Unsandboxed, a kernel of the grader's user can kill the grader, and this one would take the
# test run down with it: skipped without the sandbox even in CI (test_ci_has_the_sandbox fails).
@pytest.mark.skipif(not SANDBOXED, reason=SANDBOX_NOTE)
def test_killing_its_parent_or_the_grader_fails(tmp_path, checks):
    attack = ("import os, signal\nfor pid in (os.getppid(), " + str(os.getpid()) + "):\n"
              "    try:\n        os.kill(pid, signal.SIGKILL)\n    except OSError as exc:\n"
              "        print('refused', exc)\n")
    execution, results = grade(tmp_path, checks, RIGHT, attack)
    # this test process is the grader: still here. The kernel at worst took itself down.
    assert execution.status in (Status.OK, Status.KERNEL_DIED)
    again, results = grade(tmp_path / "next", checks, RIGHT)
    assert again.status is Status.OK and earned(results) == 2


def test_nothing_in_the_environment_tells_grading_apart(tmp_path, checks):
    from grader.kernel.protocol import Student
    from grader.pipeline.execute import execute

    notebook = write_notebook(tmp_path / "env.ipynb",
                              "import os\ndef env():\n    return dict(os.environ)")
    os.environ["GRADER_SECRET_FLAG"] = "1"
    try:
        with execute(notebook, LIMITS) as (_, session):
            session.install_bridge(10)
            seen = Student(session.request, 10).call("env")
    finally:
        del os.environ["GRADER_SECRET_FLAG"]
    assert "GRADER_SECRET_FLAG" not in seen and "CI" not in seen
    allowed = {"PATH", "HOME", "USER", "LOGNAME", "PYTHONPATH", "LANG", "OMP_NUM_THREADS",
               "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MPLBACKEND",
               "PYDEVD_DISABLE_FILE_VALIDATION", "JUPYTER_PLATFORM_DIRS",
               "PYTHONDONTWRITEBYTECODE", "JPY_PARENT_PID", "JPY_SESSION_NAME",
               "PWD",
               # set by ipykernel itself inside every kernel
               "PYTHONUNBUFFERED", "CLICOLOR", "CLICOLOR_FORCE", "FORCE_COLOR", "TERM", "PAGER",
               "GIT_PAGER", "PYDEVD_USE_FRAME_EVAL"}
    assert set(seen) <= allowed, set(seen) - allowed


# --- what the grader says about odd notebooks must be true ---------------------------------

HIDE_TRACEBACKS = ("ip = get_ipython()\nip.showtraceback = lambda *a, **k: None\n"
                   "ip.showsyntaxerror = lambda *a, **k: None")


def test_an_error_with_its_traceback_hidden_is_still_a_cell_error(tmp_path, checks):
    execution, results = grade(tmp_path, checks, RIGHT, HIDE_TRACEBACKS, "undefined_name + 1",
                               "after = 1")
    assert execution.status is Status.CELL_ERROR
    assert [str(e) for e in execution.cell_errors] == [
        "cell 3: NameError: name 'undefined_name' is not defined"]
    assert "cell 3: NameError" in execution.detail
    assert earned(results) == 2  # what the functions earn is untouched


def test_every_cell_error_is_kept_the_last_of_many_included(tmp_path, checks):
    cells = [RIGHT, "raise ValueError('first')", "x = 1", "raise KeyError('second')",
             *(["y = 2"] * 5), "raise RuntimeError('the last cell')"]
    execution, results = grade(tmp_path, checks, *cells)
    assert execution.status is Status.CELL_ERROR
    assert [(e.cell, e.ename, e.message) for e in execution.cell_errors] == [
        (2, "ValueError", "first"), (4, "KeyError", "'second'"),
        (10, "RuntimeError", "the last cell")]
    assert earned(results) == 2


HANG_CHECKS = "import pytest\n" + "".join(
    f"\n@pytest.mark.points(1)\ndef test_hang_{i}(student):\n"
    f"    assert student.call('hang') == 1, 'hang() should return 1'\n" for i in range(4))


def test_every_call_hanging_is_bounded_by_the_checks_time_limit(tmp_path):
    folder = tmp_path / "hang_checks"
    folder.mkdir()
    (folder / "test_hang.py").write_text(HANG_CHECKS)
    hang = "import time\ndef hang():\n    time.sleep(600)\n"
    limits = dataclasses.replace(LIMITS, call_timeout_s=4, checks_timeout_s=6)
    execution, run = grade_run(tmp_path, folder, hang, limits=limits)
    assert execution.status is Status.OK
    assert run.problem is Status.CHECKS_TIMEOUT and "6 s" in run.detail
    assert all(r.outcome is Outcome.FAILED for r in run.results)
    messages = [r.message for r in run.results]
    assert sum("ran out of time" in m for m in messages) >= 3, messages
    assert run.seconds < 6 + 10  # not 4 checks x 4 s: the stage stopped at its limit


def test_a_kernel_that_dies_during_the_checks_is_lost_not_a_grader_error(tmp_path, checks):
    dying = "import os\ndef square(x):\n    os._exit(1)\ndef answer(n):\n    return n + 1\n"
    start = time.monotonic()
    execution, run = grade_run(tmp_path, checks, "import torch", dying)
    assert execution.status is Status.OK
    assert run.problem is Status.KERNEL_LOST and "died during the checks" in run.detail
    assert all(r.outcome is Outcome.FAILED for r in run.results), run.results
    assert time.monotonic() - start < 60  # noticed at once, not after the call limit


def test_memory_exhausted_before_the_checks_is_the_students_failure(tmp_path, checks):
    # the notebook leaves the kernel almost no address space, so that the grader's side in
    # the kernel cannot import torch to build the checks' tensors
    hog = (f"import re\nlimit = {LIMITS.memory_mb} * 2**20\n"
           "size = int(re.search(r'VmSize:\\s+(\\d+)', open('/proc/self/status').read())"
           ".group(1)) * 1024\nhog = bytearray(max(0, limit - size - 48 * 2**20))\n"
           "def answer(n):\n    return n + 1\n")
    execution, run = grade_run(tmp_path, checks, hog)
    assert all(r.outcome is Outcome.FAILED or r.outcome is Outcome.PASSED
               for r in run.results), [r.message for r in run.results]
    square = next(r for r in run.results if r.name.endswith("test_square"))
    assert square.outcome is Outcome.FAILED and "grader error" not in square.message


def test_the_kernel_keeps_no_history_database(tmp_path, checks):
    from grader.kernel.protocol import Student
    from grader.pipeline.execute import execute

    notebook = write_notebook(tmp_path / "history.ipynb", "x = 1", "y = x + 1",
                              "import os\ndef home_files():\n"
                              "    return sorted(os.path.relpath(os.path.join(d, f), "
                              "os.path.expanduser('~')) for d, _, fs in "
                              "os.walk(os.path.expanduser('~')) for f in fs)\n"
                              "def history_on():\n    return get_ipython().history_manager"
                              ".enabled")
    with execute(notebook, LIMITS) as (_, session):
        session.install_bridge(10)
        student = Student(session.request, 10)
        files, enabled = student.call("home_files"), student.call("history_on")
    assert not enabled
    assert not [f for f in files if "history" in f], files


def test_without_the_sandbox_a_root_grader_still_runs_no_notebook_as_root(tmp_path, checks):
    from grader.kernel.protocol import Student
    from grader.pipeline.execute import execute

    secret = tmp_path / "root-only.txt"
    secret.write_text("the grader's")
    secret.chmod(0o600)
    notebook = write_notebook(tmp_path / "who.ipynb",
                              f"import os\ndef who():\n    return os.getuid(), "
                              f"os.access({str(secret)!r}, os.R_OK)")
    off = dataclasses.replace(LIMITS, sandbox="off")
    with execute(notebook, off) as (execution, session):
        assert execution.status is Status.OK, execution.detail
        session.install_bridge(10)
        uid, readable = Student(session.request, 10).call("who")
    from grader.kernel.sandbox import runs_kernels_as_nobody

    if runs_kernels_as_nobody():  # root, and the Python installation open to others
        assert (uid, readable) == (65534, False)
    else:  # not root; or root with a Python only root can reach (said in the sandbox note)
        assert uid == os.geteuid()


# Everywhere a kernel can write (to a depth of 5 folders, /proc and /sys aside), it leaves a file.
WRITABLE = '''
import os
def folders(depth=5):
    for folder, subfolders, files in os.walk("/"):
        if folder.startswith(("/proc", "/sys")) or folder.count("/") >= depth:
            subfolders[:] = []
        yield folder, files
def writable():
    return [folder for folder, _ in folders() if os.access(folder, os.W_OK)]
'''

LEAVE_BEHIND = WRITABLE + '''
import subprocess, torch, nncourse
for folder in writable():
    try:
        with open(os.path.join(folder, "left_behind.txt"), "w") as f:
            f.write("x")
    except OSError:
        pass
torch.left_behind = nncourse.left_behind = True
os.environ["LEFT_BEHIND"] = "1"
subprocess.Popen(["sleep", "299"], start_new_session=True)
'''

LOOK_AROUND = WRITABLE + '''
import socket
def look(fork_server):
    import torch, nncourse
    slot = os.path.dirname(os.getcwd())
    seen = {"files": [folder for folder, files in folders() if "left_behind.txt" in files],
            "writable": writable(),
            "modules": hasattr(torch, "left_behind") or hasattr(nncourse, "left_behind"),
            "environment": "LEFT_BEHIND" in os.environ,
            "slots": sorted(os.listdir(os.path.dirname(slot))),
            "sleeping": [p for p in os.listdir("/proc") if p.isdigit()
                         and b"sleep" in open(f"/proc/{p}/cmdline", "rb").read()],
            "fork_server": os.path.exists(fork_server)}
    try:
        socket.socket(socket.AF_UNIX).connect(fork_server)
        seen["connected"] = True
    except OSError:
        seen["connected"] = False
    return seen
'''


def _sleepers() -> list[str]:
    """Processes on this machine running ``sleep 299`` (what LEAVE_BEHIND starts)."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and (entry / "cmdline").read_bytes() == b"sleep\x00299\x00":
                found.append(entry.name)
    return found


@needs_sandbox
def test_nothing_one_kernel_leaves_reaches_the_next(tmp_path, checks):
    # two submissions in turn from the same fork server: the first writes wherever it may,
    # changes preloaded modules and its environment, and leaves a process running
    from grader.kernel.protocol import Student
    from grader.kernel.zygote import channel_for
    from grader.pipeline.execute import execute

    first, _ = grade(tmp_path / "first", checks, RIGHT, LEAVE_BEHIND)
    assert first.status is Status.OK, first.detail
    deadline = time.monotonic() + 5  # its kernel's namespace is killed as grading ends
    while _sleepers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _sleepers()
    zygote = channel_for(SANDBOXED)
    server = str(zygote.inside(zygote.place.socket))
    notebook = write_notebook(tmp_path / "second" / "nb.ipynb", RIGHT, LOOK_AROUND)
    with execute(notebook, LIMITS) as (execution, session):
        assert execution.status is Status.OK, execution.detail
        session.install_bridge(10)
        seen = Student(session.request, 10).call("look", server)
    assert seen["writable"]  # it could write somewhere (its folder, /tmp): the search worked
    assert seen["files"] == [] and not seen["modules"] and not seen["environment"]
    assert seen["sleeping"] == []
    assert len(seen["slots"]) == 1  # its own slot; no other kernel's, and no fork server
    assert not seen["fork_server"] and not seen["connected"]
