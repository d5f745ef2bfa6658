"""Where kernels come from: one fork server (a zygote) per grading process.

The zygote (``grader.bridge.zygote``) is started once, inside the sandbox when it works here,
and has already imported torch, numpy, matplotlib, the course kit and the IPython kernel. Each
submission's kernel is a fresh fork of it, in namespaces of its own, that serves that one
submission and is then discarded: ``import torch`` is paid once per process, and nothing of one
student's kernel reaches the next. Beside its slots (one folder per kernel, see
``grader.kernel.workspace``) lies a read-only copy of the course kit and of ``grader.bridge``
(as the package ``_grader_bridge``); the checks, the solutions and the gradebook are nowhere in
reach.
"""

from __future__ import annotations

import atexit
import itertools
import json
import multiprocessing.util
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, cast

from grader import bridge, sandbox

KIT_PACKAGE = "nncourse"
BRIDGE_PACKAGE = "_grader_bridge"  # the name grader/bridge/ has inside the sandbox


def kit_source() -> Path:
    """The folder of the course kit package, as installed or in the source tree."""
    import nncourse

    return Path(nncourse.__file__).resolve().parent


def base_env(home: Path, kit_parent: Path) -> dict[str, str]:
    """A scrubbed environment: nothing from the grader's shell, nothing that tells grading
    apart from a student's own run."""
    return {
        "PATH": os.path.dirname(sys.executable) + os.pathsep + "/usr/bin:/bin",
        "HOME": str(home),
        "USER": "student",
        "LOGNAME": "student",
        "PYTHONPATH": str(kit_parent),
        "LANG": "C.UTF-8",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "JUPYTER_PLATFORM_DIRS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


class ZygoteError(RuntimeError):
    """The fork server failed (a grader problem, never a student's)."""


class Zygote:
    """One worker's fork server: started once, inside the sandbox when it works here; each
    ``spawn`` forks a fresh kernel from it. Thread-safe; restarted if it dies.

    Sandboxed, its folder is seen inside as ``/grader`` (outside ``/tmp``, which each kernel
    replaces with a private one), and each kernel gets namespaces of its own; unsandboxed (a
    laptop without bubblewrap), kernels are plain forks under resource limits only."""

    INSIDE = Path("/grader")

    def __init__(self, sandboxed: bool) -> None:
        self.sandboxed = sandboxed
        self.root = Path(tempfile.mkdtemp(prefix="grader-zygote-"))
        self.kit_parent = self.root / "kit"
        self.slots = self.root / "slots"
        self._home = self.root / "home"
        self._log = self.root / "zygote.log"
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(kit_source(), self.kit_parent / KIT_PACKAGE, ignore=ignore)
        shutil.copytree(Path(bridge.__file__).parent, self.kit_parent / BRIDGE_PACKAGE,
                        ignore=ignore)
        self.slots.mkdir()
        self._home.mkdir()
        if not sandboxed and sandbox.runs_kernels_as_nobody():
            self.root.chmod(0o755)  # its kernels run as nobody and must reach their slots
        self._lock = threading.Lock()
        self._numbers = itertools.count()
        self._process: subprocess.Popen[bytes] | None = None
        self._start()

    def inside(self, path: Path) -> Path:
        """Where the kernels see ``path`` (a folder under this zygote's root)."""
        return self.INSIDE / path.relative_to(self.root) if self.sandboxed else path

    def _start(self) -> None:
        env = base_env(self.inside(self._home), self.inside(self.kit_parent))
        command = [sys.executable, "-m", f"{BRIDGE_PACKAGE}.zygote"]
        if self.sandboxed:
            command = sandbox.wrap(
                command, read_write=[(self.slots, self.inside(self.slots)),
                                     (self._home, self.inside(self._home))],
                read_only=[(self.kit_parent, self.inside(self.kit_parent))], env=env,
                cwd=self.inside(self.kit_parent))
            sandbox.hand_over([self.slots, self._home])
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env,
                cwd=self.kit_parent, start_new_session=True)
        ready = self._read(timeout=120)
        if not ready.get("ready"):
            raise ZygoteError(f"the kernel fork server did not start: it cannot import "
                              f"{', '.join(ready.get('missing', [])) or ready}")

    def _read(self, timeout: float) -> dict[str, Any]:
        process = self._process
        if process is None or process.stdout is None:
            raise ZygoteError("the kernel fork server is not running")
        done: list[bytes] = []
        reader = threading.Thread(target=lambda: done.append(process.stdout.readline()
                                                             if process.stdout else b""),
                                  daemon=True)
        reader.start()
        reader.join(timeout)
        if not done or not done[0]:
            said = self._log.read_text(errors="replace").strip().splitlines()[-3:]
            raise ZygoteError(f"the kernel fork server stopped answering: {' / '.join(said)}")
        return cast(dict[str, Any], json.loads(done[0]))

    def ask(self, request: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
        """Send one command; return the answer (ZygoteError if it fails)."""
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._start()
            assert self._process is not None and self._process.stdin is not None
            self._process.stdin.write(json.dumps(request).encode() + b"\n")
            self._process.stdin.flush()
            answer = self._read(timeout)
        if not answer.get("ok"):
            raise ZygoteError(f"the kernel fork server refused {request.get('op')}: "
                              f"{answer.get('error')}")
        return answer

    def new_slot(self) -> Path:
        """A fresh, empty slot folder for one kernel."""
        slot = self.slots / str(next(self._numbers))
        slot.mkdir()
        return slot

    def close(self) -> None:
        """Stop the fork server (its kernels die with it) and remove its folders."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            try:
                assert process.stdin is not None
                process.stdin.write(b'{"op": "quit"}\n')
                process.stdin.close()
                process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                process.kill()
                process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


_ZYGOTES: dict[bool, Zygote] = {}
_ZYGOTES_LOCK = threading.Lock()


def zygote_for(sandboxed: bool) -> Zygote:
    """This process's fork server (sandboxed or not), started on first use and stopped when
    the process exits."""
    with _ZYGOTES_LOCK:
        if sandboxed not in _ZYGOTES:
            if not _ZYGOTES:
                atexit.register(close_zygotes)
                # a multiprocessing worker leaves through os._exit, past atexit: its finalizers
                multiprocessing.util.Finalize(None, close_zygotes, exitpriority=10)
            _ZYGOTES[sandboxed] = Zygote(sandboxed)
        return _ZYGOTES[sandboxed]


def close_zygotes() -> None:
    """Stop this process's fork servers (a worker that is done, or the process at exit)."""
    with _ZYGOTES_LOCK:
        for zygote in _ZYGOTES.values():
            zygote.close()
        _ZYGOTES.clear()


