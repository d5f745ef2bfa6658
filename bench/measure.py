"""Wall and CPU time of commands, every descendant's CPU included.

A process's CPU reaches ``getrusage(RUSAGE_CHILDREN)`` of its parent only when that parent
waits for it. Graders start kernels, kernels may outlive the process that started them, and a
process whose parent is gone is adopted by init: its CPU would be lost. So this process makes
itself a child subreaper (Linux ``PR_SET_CHILD_SUBREAPER``): every orphan below it is adopted
here, and after each command every descendant is waited for before the CPU is read.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


class MeasureError(RuntimeError):
    """The measurement itself cannot be trusted (not a failure of the measured command)."""


@dataclass(frozen=True)
class Measured:
    """What running some commands cost: seconds of wall-clock time, and of CPU time (user and
    system) of the commands and all their descendants; the 1-minute load average before and
    after; the first non-zero exit status (0 if all succeeded)."""

    wall_s: float
    user_s: float
    sys_s: float
    load_start: float
    load_end: float
    returncode: int
    adopted: int  # descendants that outlived their parent and were waited for here
    killed: int  # descendants still running long after the command ended, killed here

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


def _become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise MeasureError(f"cannot become a child subreaper: "
                           f"{os.strerror(ctypes.get_errno())}")


def _children() -> list[int]:
    """This process's children (zombies included), from each process's /proc/PID/stat."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        if int(stat.rpartition(")")[2].split()[1]) == me:
            found.append(int(entry.name))
    return found


def _reap_all(grace_s: float) -> tuple[int, int]:
    """Wait for every child left (adopted orphans); past ``grace_s``, kill what still runs.
    Returns (children waited for, children killed)."""
    waited = killed = 0
    deadline = time.monotonic() + grace_s
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return waited, killed
        if pid:
            waited += 1
            continue
        if time.monotonic() > deadline:
            for child in _children():
                os.kill(child, signal.SIGKILL)
                killed += 1
            deadline = float("inf")  # they die now; wait for them
        time.sleep(0.02)


def run_measured(commands: Sequence[Sequence[str]], *, cwd: Path, env: Mapping[str, str],
                 log: Path, timeout_s: float = 3600, grace_s: float = 30) -> Measured:
    """Run ``commands`` one after the other (stdout and stderr appended to ``log``) and
    measure them together. Stops at the first command that fails.

    The calling process must have no other children: their CPU would be counted too."""
    _become_subreaper()
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        pass
    else:
        raise MeasureError("this process has children already; their CPU would count")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_start = os.getloadavg()[0]
    start = time.perf_counter()
    code = 0
    with log.open("ab") as out:
        for command in commands:
            out.write(f"$ {' '.join(command)}\n".encode())
            out.flush()
            process = subprocess.Popen(command, cwd=cwd, env=dict(env), stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                code = process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
                out.write(f"[bench: killed after {timeout_s:g} s]\n".encode())
            if code != 0:
                break
    wall = time.perf_counter() - start  # what a person waits; descendants' CPU still counts
    adopted, killed = _reap_all(grace_s)
    load_end = os.getloadavg()[0]
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Measured(wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime,
                    load_start, load_end, code, adopted, killed)
