"""The student's kernel as a process: its private workspace, how it is started, and the
session the check stage talks to it through.

A workspace is a fresh temporary folder holding the kernel's working folder (a copy of the
submission), its HOME, the folder of its ipc sockets, and a read-only copy of the course kit
with the kernel's end of the check protocol (``grader.bridge``, as the package
``_grader_bridge``). The checks, the solutions and the gradebook are not in it. The kernel runs
under ``grader.kernel_launch`` (resource limits) and, where it works, bubblewrap
(``grader.sandbox``).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

from grader import bridge, sandbox
from grader.bridge import wire
from grader.protocol import REBUILDABLE, StudentError
from grader.records import Limits

KERNEL_NAME = "nncourse-grader"
KIT_PACKAGE = "nncourse"
BRIDGE_PACKAGE = "_grader_bridge"  # the name grader/bridge/ has inside the kernel
MAX_COPIED_FILE = 50 * 2**20


def kit_source() -> Path:
    """The folder of the course kit package, as installed or in the source tree."""
    import nncourse

    return Path(nncourse.__file__).resolve().parent


@dataclass(frozen=True)
class Workspace:
    """The folders of one kernel (see the module docstring); gone when ``workspace`` exits."""

    root: Path
    workdir: Path  # the kernel's working folder, as the grader sees it
    home: Path
    ipc: Path
    kit_parent: Path  # on the kernel's PYTHONPATH: nncourse and the bridge
    log: Path  # the kernel's stderr


@contextmanager
def workspace(notebook_path: Path) -> Iterator[Workspace]:
    """A fresh workspace for running ``notebook_path``: the regular files beside the notebook
    (data a student saved; links never) are copied into the working folder."""
    with tempfile.TemporaryDirectory(prefix="grader-") as tmp:
        root = Path(tmp)
        space = Workspace(root, root / "work", root / "home", root / "ipc", root / "kit",
                          root / "kernel.log")
        for folder in (space.workdir, space.home, space.ipc):
            folder.mkdir()
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(kit_source(), space.kit_parent / KIT_PACKAGE, ignore=ignore)
        shutil.copytree(Path(bridge.__file__).parent, space.kit_parent / BRIDGE_PACKAGE,
                        ignore=ignore)
        for item in notebook_path.parent.iterdir():
            if item.is_file() and not item.is_symlink() and \
                    item.stat().st_size < MAX_COPIED_FILE:
                shutil.copyfile(item, space.workdir / item.name)
        yield space


def kernel_env(space: Workspace) -> dict[str, str]:
    """A scrubbed environment: nothing from the grader's shell, nothing that tells grading
    apart from a student's own run."""
    return {
        "PATH": os.path.dirname(sys.executable) + os.pathsep + "/usr/bin:/bin",
        "HOME": str(space.home),
        "USER": "student",
        "LOGNAME": "student",
        "PYTHONPATH": str(space.kit_parent),
        "LANG": "C.UTF-8",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "JUPYTER_PLATFORM_DIRS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def _kernelspec(space: Workspace, limits: Limits, inner: list[str]) -> KernelSpecManager:
    spec_dir = space.root / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    sandboxed_as_nobody = inner[0] == "bwrap" and os.geteuid() == 0
    argv = [sys.executable, "-m", "grader.kernel_launch",
            "--memory-mb", str(limits.memory_mb), "--cpu-s", str(limits.cpu_s),
            "--fsize-mb", str(limits.fsize_mb), "--nproc", str(limits.nproc),
            "--nproc-uid", str(sandbox.NOBODY if sandboxed_as_nobody else os.getuid()),
            "--", *inner]
    # Interrupts travel as messages: a SIGINT to the process group would also reach bubblewrap,
    # which dies of it and takes the kernel along.
    (spec_dir / "kernel.json").write_text(json.dumps(
        {"argv": argv, "display_name": "nncourse grader", "language": "python",
         "interrupt_mode": "message"}))
    return KernelSpecManager(kernel_dirs=[str(space.root / "kernels")],
                             ensure_native_kernel=False)


@contextmanager
def started_kernel(space: Workspace, limits: Limits, sandboxed: bool) -> Iterator[KernelManager]:
    """An IPython kernel started in ``space`` under ``limits`` (sandboxed or not); shut down
    when the context exits."""
    env = kernel_env(space)
    # no history database: nothing of one run is written for the next
    inner = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
             "--HistoryManager.enabled=False"]
    if sandboxed:
        inner = sandbox.wrap(inner, read_write=[space.workdir, space.home, space.ipc],
                             read_only=[space.kit_parent], env=env, cwd=space.workdir,
                             tmp_mb=limits.tmp_mb)
    # ipc sockets in the private folder: no TCP port, nothing reachable from outside
    km = KernelManager(kernel_name=KERNEL_NAME, transport="ipc", ip=str(space.ipc / "kernel"),
                       connection_file=str(space.ipc / "connection.json"),
                       kernel_spec_manager=_kernelspec(space, limits, inner),
                       client_class="jupyter_client.asynchronous.AsyncKernelClient")
    km.write_connection_file()
    if sandboxed:
        sandbox.hand_over([space.workdir, space.home, space.ipc])
    try:
        with space.log.open("wb") as log:
            # the kernel's own chatter goes to a log, not into the grader's terminal
            km.start_kernel(cwd=str(space.workdir), env=env, stdout=subprocess.DEVNULL,
                            stderr=log)
        yield km
    finally:
        if km.has_kernel:
            km.shutdown_kernel(now=True)


def log_tail(log: Path) -> str:
    """The last line the kernel wrote to its stderr, or ""."""
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""


Hook = Callable[[dict[str, Any]], None]


class KernelSession:
    """The live kernel that ran a notebook, as the check stage uses it: ``request`` is the
    protocol's transport. Once the kernel dies or stops answering, ``lost`` says why, and every
    later request fails at once with that reason (the student's, not the grader's)."""

    def __init__(self, km: KernelManager, space: Workspace) -> None:
        self._km = km
        self._space = space
        self.workdir = space.workdir
        self._kc = km.blocking_client()
        self._kc.start_channels()
        self._kc.wait_for_ready(timeout=60)
        self.lost = ""

    def install_bridge(self, timeout: float) -> None:
        """Load the kernel's end of the protocol (``grader.bridge.kernel``) into the kernel;
        raise StudentError (and set ``lost``) if the kernel cannot."""
        code = (f"__import__({BRIDGE_PACKAGE + '.kernel'!r}, fromlist=['install'])"
                f".install(get_ipython(), {json.dumps(REBUILDABLE)})")
        reply = self._execute(code, timeout, lambda msg: None)
        if reply.get("status") != "ok":
            self.lost = (f"the kernel could not load the grader's side of the checks: "
                         f"{reply.get('ename')}: {str(reply.get('evalue', ''))[:200]}")
            raise StudentError(self.lost)

    def request(self, request_json: str, timeout: float) -> dict[str, Any]:
        """Send one request to the kernel's end; return its decoded JSON reply."""
        payloads: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            if msg["msg_type"] in ("display_data", "execute_result"):
                data = msg["content"].get("data", {})
                if isinstance(data.get(wire.MIME), str):
                    payloads.append(data[wire.MIME])

        reply = self._execute(f"__grader_bridge__({request_json!r})", timeout, hook)
        if not payloads:
            why = f"{reply.get('ename')}: {reply.get('evalue')}" if reply.get("ename") else ""
            raise StudentError(f"the kernel sent no answer {why}".strip())
        try:
            answer = json.loads(payloads[-1])
        except ValueError as exc:
            raise StudentError("the kernel's answer was not valid JSON") from exc
        if not isinstance(answer, dict):
            raise StudentError("the kernel's answer was not a JSON object")
        return answer

    def _execute(self, code: str, timeout: float, hook: Hook) -> dict[str, Any]:
        if self.lost:
            raise StudentError(self.lost)
        try:
            return self._run(code, timeout, hook)
        except TimeoutError:
            self._recover_from_timeout()
            raise StudentError(f"the call did not finish within {timeout:g} s") from None

    def _run(self, code: str, timeout: float, hook: Hook) -> dict[str, Any]:
        """Execute ``code``, pass its output messages to ``hook``, return its reply's content;
        TimeoutError past ``timeout`` s. A kernel that dies meanwhile is noticed within half a
        second, not at the end of the timeout."""
        if not self._km.is_alive():
            raise StudentError(self._died())
        msg_id = self._kc.execute(code, store_history=False, allow_stdin=False,
                                  stop_on_error=False)
        deadline = time.monotonic() + timeout
        idle = False
        while not idle:
            try:
                msg = self._kc.get_iopub_msg(timeout=self._poll(deadline))
            except queue.Empty:
                if not self._km.is_alive():
                    raise StudentError(self._died()) from None
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            hook(msg)
            idle = (msg["msg_type"] == "status"
                    and msg["content"].get("execution_state") == "idle")
        while True:
            try:
                reply = self._kc.get_shell_msg(timeout=self._poll(deadline))
            except queue.Empty:
                if not self._km.is_alive():
                    raise StudentError(self._died()) from None
                continue
            if reply["parent_header"].get("msg_id") == msg_id:
                return cast(dict[str, Any], reply["content"])

    @staticmethod
    def _poll(deadline: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return min(0.5, left)

    def _died(self) -> str:
        said = log_tail(self._space.log)
        self.lost = ("the kernel died during the checks (out of memory, a crash, or exit())"
                     + (f"; it said: {said}" if said else ""))
        return self.lost

    def _recover_from_timeout(self) -> None:
        # Interrupt the call; a kernel that ignores the interrupt is given up, so that the
        # remaining checks fail fast instead of each waiting for its own timeout.
        if not self._km.is_alive():
            self._died()
            return
        self._km.interrupt_kernel()
        try:
            self._run("pass", 5, lambda msg: None)
        except TimeoutError:
            self.lost = "the kernel stopped answering during the checks (it ignored an interrupt)"
            self._km.shutdown_kernel(now=True)

    def close(self) -> None:
        self._kc.stop_channels()
