"""Stage 2, execute: run a submitted notebook headlessly in its own limited kernel.

Every way a notebook can go wrong (a cell raises, a cell or the whole notebook runs too long,
the kernel dies, the file is not a notebook) ends as a status with a message, never as an
exception out of this module. A cell's outcome is read from the kernel's execute reply, not from
its outputs, so a notebook that hides its tracebacks still shows its errors; every cell error
is kept. The kernel stays alive after the notebook ran, so that the check stage can call into
it (``grader.kernel.session.KernelSession``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import queue
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from grader.course.notebook import read_notebook
from grader.errors import MalformedNotebook, ZygoteError
from grader.kernel import plain
from grader.kernel.sandbox import use_sandbox
from grader.kernel.session import (
    KernelSession,
    Workspace,
    log_size,
    log_tail,
    started_kernel,
    workspace,
)
from grader.kernel.zygote import channel_for, unsupported
from grader.records import CellError, Execution, Limits, Status
from grader.text import CELL_CHARS, NAME_CHARS, first_line, one_line


class _Client(NotebookClient):
    """nbclient's client, keeping at most ``max_output_chars`` of output per cell and each
    cell's execute reply."""

    def __init__(self, nb: Any, max_output_chars: int, **kwargs: Any) -> None:
        super().__init__(nb, **kwargs)
        self.max_output_chars = max_output_chars
        self.kept_chars: dict[int, int] = {}
        self.truncated = False
        self.replies: dict[int, dict[str, Any]] = {}
        self.on_cell_executed = self._remember_reply

    def _remember_reply(self, cell: Any, cell_index: int, execute_reply: Any) -> None:
        self.replies[cell_index] = (execute_reply or {}).get("content", {})

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


@contextmanager
def execute(notebook_path: Path, limits: Limits
            ) -> Iterator[tuple[Execution, KernelSession | None]]:
    """Run ``notebook_path`` in a fresh kernel; yield its ``Execution`` and the live session.

    The session is None when the kernel is not usable (malformed file, timeout, dead kernel).
    Everything (kernel, temporary folders) is gone when the context exits.
    """
    try:
        nb = read_notebook(notebook_path, limits.max_notebook_mb)
    except MalformedNotebook as exc:
        yield Execution(Status.MALFORMED, str(exc), 0.0, 0), None
        return
    sandboxed, _ = use_sandbox(limits)
    if not unsupported():
        channel_for(sandboxed)  # started once per run, not this notebook's time
    start = time.monotonic()
    with _kernel(notebook_path, limits, sandboxed) as (space, km):
        execution = _run_cells(nb, km, space.workdir, space.log, limits, start)
        session = None
        if execution.kernel_usable:
            try:
                session = KernelSession(km, space, limits.kernel_start_s,
                                        limits.max_reply_mb * 2**20)
            except RuntimeError:  # jupyter_client: it died between its last reply and now
                if km.is_alive():
                    raise
                execution = dataclasses.replace(
                    execution, status=Status.KERNEL_DIED,
                    detail="the kernel died right after the notebook's last cell: out of "
                           "memory, a crash, exit(), or a process it started that killed it")
        try:
            yield execution, session
        finally:
            if session is not None:
                session.close()


@contextmanager
def _kernel(notebook_path: Path, limits: Limits, sandboxed: bool
            ) -> Iterator[tuple[Workspace, KernelManager]]:
    """A fresh workspace and kernel for the notebook. A fork server that died since the last
    kernel (its channel closes a moment later) is met by asking a second time: the channel is
    replaced and the fork server started again. Where there is no fork server (macOS,
    Windows), a plain kernel."""
    if unsupported():
        with plain.started_kernel(notebook_path, limits) as (space, km):
            yield space, km
        return
    for attempt in (1, 2):
        zygote = channel_for(sandboxed)
        with contextlib.ExitStack() as stack:
            try:
                space = stack.enter_context(workspace(notebook_path, zygote))
                km = stack.enter_context(started_kernel(space, limits, zygote))
            except ZygoteError:
                if attempt == 2 or not zygote.broken:
                    raise
                continue
            yield space, km
            return


def _cell_error(index: int, reply: dict[str, Any], cell: Any) -> CellError | None:
    """The cell's error, from its execute reply (whatever its outputs show), or None."""
    if reply.get("status") == "error":
        return CellError(index + 1, one_line(str(reply.get("ename") or "Error"), NAME_CHARS),
                         first_line(str(reply.get("evalue", ""))))
    shown = next((o for o in cell.get("outputs", []) if o.output_type == "error"), None)
    if shown is not None:  # an error output with an "ok" reply: keep what the cell showed
        return CellError(index + 1, one_line(str(shown.ename), NAME_CHARS),
                         first_line(str(shown.evalue)))
    return None


def _run_cells(nb: nbformat.NotebookNode, km: KernelManager, workdir: Path, log: Path,
               limits: Limits, start: float) -> Execution:
    client = _Client(
        nb, limits.max_output_chars, km=km, timeout=limits.cell_timeout_s, allow_errors=True,
        record_timing=False, interrupt_on_timeout=False, startup_timeout=limits.kernel_start_s,
        resources={"metadata": {"path": str(workdir)}},
    )
    deadline = start + (limits.notebook_timeout_s or float("inf"))
    errors: list[CellError] = []
    cells_run = 0
    status, detail = Status.OK, "the notebook ran to the end"
    timed_out = 0
    with client.setup_kernel():
        banner = log_size(log)  # the kernel is ready: what it writes from here on is news
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code" or not cell.source.strip():
                continue
            what = f"cell {index + 1} ({first_line(cell.source, CELL_CHARS)!r})"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                status = Status.NOTEBOOK_TIMEOUT
                detail = (f"the notebook did not finish within {limits.notebook_timeout_s:g} s; "
                          f"stopped before {what}")
                break
            budget_limited = not limits.cell_timeout_s or remaining < limits.cell_timeout_s
            client.timeout = max(1, int(min(limits.cell_timeout_s or remaining, remaining)))
            try:
                client.execute_cell(cell, index)
            except CellTimeoutError:
                # Interrupt and go on with the next cell, as long as the kernel answers again.
                km.interrupt_kernel()
                if budget_limited:
                    status = Status.NOTEBOOK_TIMEOUT
                    detail = (f"{what} did not finish within {client.timeout} s, where the "
                              f"notebook's {limits.notebook_timeout_s:g} s ran out")
                    break
                if not _wait_idle(km, 10):
                    status = Status.NOTEBOOK_TIMEOUT
                    detail = (f"{what} did not finish within {client.timeout} s and did not "
                              f"stop when interrupted; the notebook was stopped there")
                    break
                timed_out += 1
                errors.append(CellError(
                    index + 1, "CellTimeout", f"{first_line(cell.source, CELL_CHARS)!r} did not "
                                              f"finish within {client.timeout} s; interrupted"))
                continue
            except DeadKernelError:
                status = Status.KERNEL_DIED
                said = log_tail(log, banner)
                detail = (f"the kernel died while running {what}: out of memory, a crash, "
                          f"or exit()" + (f"; it said: {said}" if said else ""))
                break
            cells_run += 1
            error = _cell_error(index, client.replies.get(index, {}), cell)
            if error is not None:
                errors.append(error)
        if client.kc is not None:
            client.kc.stop_channels()
    if status is Status.OK and timed_out:
        first = next(e for e in errors if e.ename == "CellTimeout")
        status, detail = Status.CELL_TIMEOUT, f"{timed_out} cell(s) timed out; {first}"
    elif status is Status.OK and errors:
        status = Status.CELL_ERROR
        detail = f"{len(errors)} cell(s) raised an error; first: {errors[0]}"
    return Execution(status, detail, time.monotonic() - start, cells_run, tuple(errors),
                     client.truncated)


def _wait_idle(km: KernelManager, timeout: float) -> bool:
    """After an interrupt, whether the kernel answers a trivial request within ``timeout``."""
    bkc = km.blocking_client()
    bkc.start_channels()
    try:
        bkc.execute_interactive("pass", timeout=timeout, output_hook=lambda m: None,
                                store_history=False)
        return True
    except (TimeoutError, queue.Empty):
        return False
    finally:
        bkc.stop_channels()
