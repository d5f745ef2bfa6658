"""Stage 2, execute: run a submitted notebook headlessly in a separate, resource-limited kernel.

The kernel's working folder is a fresh temporary copy of the submission plus the course kit;
the checks, the solutions and the gradebook are not in it. Every way a notebook can go wrong
(a cell raises, a cell or the whole notebook runs too long, the kernel dies, the file is not a
notebook) ends as a status with a message, never as an exception out of this module. The kernel
stays alive after the notebook ran so that the check stage can call into it.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.reader import NotJSONError

from grader import sandbox
from grader.protocol import MIME, StudentError

KERNEL_NAME = "nncourse-grader"
KIT_PACKAGE = "nncourse"


class ExecStatus(enum.Enum):
    """How the execution of one notebook ended. The detail text lives in ``Execution``."""

    OK = "ok"
    CELL_ERROR = "cell_error"
    CELL_TIMEOUT = "cell_timeout"
    NOTEBOOK_TIMEOUT = "notebook_timeout"
    KERNEL_DIED = "kernel_died"
    MALFORMED = "malformed"
    GRADER_ERROR = "grader_error"


@dataclass(frozen=True)
class Limits:
    """Resource limits for one notebook. Seconds, megabytes, characters; 0 means no limit."""

    cell_timeout_s: float = 60.0
    notebook_timeout_s: float = 300.0
    call_timeout_s: float = 20.0
    memory_mb: int = 4096
    cpu_s: int = 900
    fsize_mb: int = 256
    nproc: int = 256
    max_output_chars: int = 100_000
    tmp_mb: int = 512
    sandbox: str = "auto"  # "auto": bubblewrap when it works here; "required"; "off"


@dataclass(frozen=True)
class Execution:
    """What running the notebook did: a status, a message for the student, timings."""

    status: ExecStatus
    detail: str
    seconds: float
    cells_run: int
    cell_errors: tuple[str, ...] = ()
    output_truncated: bool = False

    @property
    def kernel_usable(self) -> bool:
        """Whether checks may call into the kernel."""
        return self.status in (ExecStatus.OK, ExecStatus.CELL_ERROR, ExecStatus.CELL_TIMEOUT)


class _BoundedClient(NotebookClient):
    """nbclient's client, keeping at most ``max_output_chars`` of output per cell."""

    def __init__(self, nb: Any, max_output_chars: int, **kwargs: Any) -> None:
        super().__init__(nb, **kwargs)
        self.max_output_chars = max_output_chars
        self.kept_chars: dict[int, int] = {}
        self.truncated = False

    def output(self, outs: list[Any], msg: dict[str, Any], display_id: str | None,
               cell_index: int) -> Any:
        if self.max_output_chars:
            size = len(json.dumps(msg.get("content", {}), default=str))
            kept = self.kept_chars.get(cell_index, 0)
            if kept >= self.max_output_chars:
                return None
            self.kept_chars[cell_index] = kept + size
            if kept + size > self.max_output_chars:
                self.truncated = True
                outs.append(nbformat.v4.new_output(
                    "stream", name="stderr",
                    text=f"[grader: output of this cell truncated at "
                         f"{self.max_output_chars:,} characters]\n"))
                return None
        return super().output(outs, msg, display_id, cell_index)


def read_notebook(path: Path) -> nbformat.NotebookNode:
    """Read and validate a notebook; raise ValueError with a student-readable reason."""
    try:
        nb = nbformat.read(path, as_version=4)
    except UnicodeDecodeError:
        raise ValueError(f"{path.name} is not a valid notebook file: not UTF-8 text") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path.name}: {exc.strerror or exc}") from exc
    except NotJSONError:
        raise ValueError(f"{path.name} is not a valid notebook file: not JSON (cut short, or "
                         f"edited by hand?)") from None
    except Exception as exc:  # nbformat raises several reader errors
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path.name} is not a valid notebook file: {first}") from exc
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as exc:
        raise ValueError(f"{path.name} does not follow the notebook format: "
                         f"{str(exc).splitlines()[0]}") from exc
    language = (nb.metadata.get("kernelspec", {}).get("language")
                or nb.metadata.get("language_info", {}).get("name") or "python")
    if str(language).lower() != "python":
        raise ValueError(f"{path.name} is a {language} notebook; the course uses Python")
    if not any(cell.cell_type == "code" for cell in nb.cells):
        raise ValueError(f"{path.name} has no code cells")
    return nb


def kit_source() -> Path:
    """The folder of the course kit package, as installed or in the source tree."""
    import nncourse

    return Path(nncourse.__file__).resolve().parent


class SandboxUnavailable(Exception):
    """The course requires the sandbox and it cannot be created on this machine."""


def use_sandbox(limits: Limits) -> tuple[bool, str]:
    """Whether kernels run sandboxed under ``limits``, and a sentence saying so (or why not).

    Raise SandboxUnavailable when ``limits.sandbox`` is "required" and it cannot be had."""
    if limits.sandbox == "off":
        return False, "kernel NOT sandboxed (limits.sandbox = \"off\"); resource limits only"
    found = sandbox.probe()
    if found.available:
        return True, found.reason
    if limits.sandbox == "required":
        raise SandboxUnavailable(f"the course requires the kernel sandbox: {found.reason}")
    return False, f"kernel NOT sandboxed: {found.reason}; resource limits only"


def _write_kernelspec(root: Path, limits: Limits, inner: list[str]) -> KernelSpecManager:
    spec_dir = root / "kernels" / KERNEL_NAME
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
    return KernelSpecManager(kernel_dirs=[str(root / "kernels")], ensure_native_kernel=False)


def _kernel_env(home: Path, kit_parent: Path) -> dict[str, str]:
    # A scrubbed environment: nothing from the grader's shell, nothing that tells grading apart.
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


def _copy_submission(source: Path, workdir: Path) -> None:
    # Regular files beside the notebook travel with it (data a student saved); links never do.
    folder = source.parent
    for item in folder.iterdir():
        if item.is_file() and not item.is_symlink() and item.stat().st_size < 50 * 2**20:
            shutil.copyfile(item, workdir / item.name)


class KernelSession:
    """A live kernel that ran a notebook; the check stage calls into it with ``request``."""

    def __init__(self, km: KernelManager, workdir: Path) -> None:
        self._km = km
        self.workdir = workdir  # the kernel's working folder, as the grader sees it
        self._kc = km.blocking_client()
        self._kc.start_channels()
        self._kc.wait_for_ready(timeout=60)
        self.dead = False

    def send_source(self, source: str, timeout: float) -> None:
        """Run grader code (the bridge) in the kernel; raise StudentError if it fails."""
        reply = self._execute(source, timeout, lambda msg: None)
        if reply.get("status") != "ok":
            raise StudentError(f"the grader could not set up the kernel: {reply.get('ename')}")

    def request(self, request_json: str, timeout: float) -> dict[str, Any]:
        """Send one bridge request; return the bridge's decoded JSON reply."""
        payloads: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            if msg["msg_type"] in ("display_data", "execute_result"):
                data = msg["content"].get("data", {})
                if isinstance(data.get(MIME), str):
                    payloads.append(data[MIME])

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

    def _execute(self, code: str, timeout: float, hook: Any) -> dict[str, Any]:
        if self.dead or not self._km.is_alive():
            self.dead = True
            raise StudentError("the kernel is no longer running")
        try:
            reply = self._kc.execute_interactive(
                code, timeout=timeout, output_hook=hook, store_history=False,
                allow_stdin=False, stop_on_error=False)
        except TimeoutError:
            self._recover_from_timeout()
            raise StudentError(f"the call did not finish within {timeout:g} s") from None
        return reply["content"]

    def _recover_from_timeout(self) -> None:
        # Interrupt the call; a kernel that ignores the interrupt is given up, so that the
        # remaining checks fail fast instead of each waiting for its own timeout.
        self._km.interrupt_kernel()
        try:
            self._kc.execute_interactive("pass", timeout=5, output_hook=lambda m: None,
                                         store_history=False)
        except TimeoutError:
            self.dead = True
            self._km.shutdown_kernel(now=True)

    def close(self) -> None:
        self._kc.stop_channels()


@contextmanager
def execute(notebook_path: Path, limits: Limits
            ) -> Iterator[tuple[Execution, KernelSession | None]]:
    """Run ``notebook_path`` in a fresh kernel; yield its ``Execution`` and the live session.

    The session is None when the kernel is not usable (malformed file, timeout, dead kernel).
    Everything (kernel, temporary folders) is gone when the context exits.
    """
    start = time.monotonic()
    try:
        nb = read_notebook(notebook_path)
    except ValueError as exc:
        yield Execution(ExecStatus.MALFORMED, str(exc), 0.0, 0), None
        return

    sandboxed, _ = use_sandbox(limits)
    with tempfile.TemporaryDirectory(prefix="grader-") as tmp:
        root = Path(tmp)
        workdir, kit_parent = root / "work", root / "kit"
        home, ipc = root / "home", root / "ipc"
        for folder in (workdir, home, ipc):
            folder.mkdir()
        shutil.copytree(kit_source(), kit_parent / KIT_PACKAGE,
                        ignore=shutil.ignore_patterns("__pycache__"))
        _copy_submission(notebook_path, workdir)
        env = _kernel_env(home, kit_parent)
        inner = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        if sandboxed:
            inner = sandbox.wrap(inner, read_write=[workdir, home, ipc], read_only=[kit_parent],
                                 env=env, cwd=workdir, tmp_mb=limits.tmp_mb)
        # ipc sockets in the private folder: no TCP port, nothing reachable from outside
        km = KernelManager(kernel_name=KERNEL_NAME, transport="ipc", ip=str(ipc / "kernel"),
                           connection_file=str(ipc / "connection.json"),
                           kernel_spec_manager=_write_kernelspec(root, limits, inner),
                           client_class="jupyter_client.asynchronous.AsyncKernelClient")
        km.write_connection_file()
        if sandboxed:
            sandbox.hand_over([workdir, home, ipc])
        session: KernelSession | None = None
        try:
            with (root / "kernel.log").open("wb") as log:
                # the kernel's own chatter goes to a log, not into the grader's terminal
                km.start_kernel(cwd=str(workdir), env=env, stdout=subprocess.DEVNULL,
                                stderr=log)
            execution = _run_cells(nb, km, workdir, limits, start)
            if execution.status is ExecStatus.KERNEL_DIED:
                execution = _with_log_tail(execution, root / "kernel.log")
            if execution.kernel_usable:
                session = KernelSession(km, workdir)
            yield execution, session
        finally:
            if session is not None:
                session.close()
            if km.has_kernel:
                km.shutdown_kernel(now=True)


def _run_cells(nb: nbformat.NotebookNode, km: KernelManager, workdir: Path, limits: Limits,
               start: float) -> Execution:
    client = _BoundedClient(
        nb, limits.max_output_chars, km=km, timeout=limits.cell_timeout_s, allow_errors=True,
        record_timing=False, interrupt_on_timeout=False, startup_timeout=60,
        resources={"metadata": {"path": str(workdir)}},
    )
    deadline = start + (limits.notebook_timeout_s or float("inf"))
    errors: list[str] = []
    cells_run = 0
    status, detail = ExecStatus.OK, "the notebook ran to the end"
    timed_out: list[int] = []
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code" or not cell.source.strip():
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                status = ExecStatus.NOTEBOOK_TIMEOUT
                detail = (f"the notebook did not finish within {limits.notebook_timeout_s:g} s; "
                          f"stopped before cell {index + 1}")
                break
            budget_limited = not limits.cell_timeout_s or remaining < limits.cell_timeout_s
            client.timeout = max(1, int(min(limits.cell_timeout_s or remaining, remaining)))
            try:
                client.execute_cell(cell, index)
            except CellTimeoutError:
                # Interrupt and go on with the next cell, as long as the kernel answers again.
                km.interrupt_kernel()
                what = f"cell {index + 1} ({_first_line(cell.source)!r})"
                if budget_limited or not _wait_idle(client, 10):
                    status = ExecStatus.NOTEBOOK_TIMEOUT
                    detail = (f"{what} did not finish within {client.timeout} s and the "
                              f"notebook ran out of time")
                    break
                timed_out.append(index)
                errors.append(f"{what}: did not finish within {client.timeout} s, interrupted")
                continue
            except DeadKernelError:
                status = ExecStatus.KERNEL_DIED
                detail = (f"the kernel died while running cell {index + 1} "
                          f"({_first_line(cell.source)!r}): out of memory, a crash, or exit()")
                break
            cells_run += 1
            error = next((o for o in cell.get("outputs", []) if o.output_type == "error"), None)
            if error is not None:
                evalue = str(error.evalue).strip()[:300]
                what = f"{error.ename}: {evalue}" if evalue else error.ename
                errors.append(f"cell {index + 1}: {what}")
        client.kc.stop_channels()
    if status is ExecStatus.OK and timed_out:
        status, detail = ExecStatus.CELL_TIMEOUT, f"{len(timed_out)} cell(s) timed out; " + \
            next(e for e in errors if "did not finish" in e)
    elif status is ExecStatus.OK and errors:
        status = ExecStatus.CELL_ERROR
        detail = f"{len(errors)} cell(s) raised an error; first: {errors[0]}"
    return Execution(status, detail, time.monotonic() - start, cells_run, tuple(errors),
                     client.truncated)


def _with_log_tail(execution: Execution, log: Path) -> Execution:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    if not lines:
        return execution
    return dataclasses.replace(execution, detail=f"{execution.detail}; kernel said: "
                                                  f"{lines[-1][:200]}")


def _wait_idle(client: NotebookClient, timeout: float) -> bool:
    """After an interrupt, whether the kernel answers a trivial request within ``timeout``."""
    bkc = client.km.blocking_client()
    bkc.start_channels()
    try:
        bkc.execute_interactive("pass", timeout=timeout, output_hook=lambda m: None,
                                store_history=False)
        return True
    except (TimeoutError, queue.Empty):
        return False
    finally:
        bkc.stop_channels()


def _first_line(source: str) -> str:
    return source.strip().splitlines()[0][:60] if source.strip() else ""
