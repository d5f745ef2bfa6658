"""The student's kernel as a process: its private workspace, how it is started from the fork
server (``grader.kernel.zygote``), and the session the check stage talks to it through.

A kernel's workspace is a fresh slot under the fork server's slots folder: the kernel's working
folder (a copy of the submission), its HOME, the folder of its ipc sockets, its log.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import zmq
import zmq.asyncio
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.client import KernelClient
from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from jupyter_client.provisioning.local_provisioner import LocalProvisioner
from jupyter_core.utils import ensure_async, run_sync

from grader.errors import StudentError, ZygoteError
from grader.kernel import sandbox
from grader.kernel.bridge import wire
from grader.kernel.protocol import REBUILDABLE
from grader.kernel.zygote import BRIDGE_PACKAGE, Channel, base_env
from grader.records import Limits
from grader.text import QUOTE_CHARS, clip, first_line, last_line, one_line

KERNEL_NAME = "nncourse-grader"
MAX_COPIED_FILE = 50 * 2**20


@dataclass(frozen=True)
class Workspace:
    """The folders of one kernel (see the module docstring); gone when ``workspace`` exits."""

    slot: Path
    workdir: Path  # the kernel's working folder, as the grader sees it
    home: Path
    ipc: Path
    kit_parent: Path  # on the kernel's PYTHONPATH: nncourse and the bridge (read-only)
    log: Path  # the kernel's stdout and stderr


@contextmanager
def workspace(notebook_path: Path, zygote: Channel) -> Iterator[Workspace]:
    """A fresh slot for running ``notebook_path``: the regular files beside the notebook (data
    a student saved; links never) are copied into the working folder."""
    slot = zygote.new_slot()
    space = Workspace(slot, slot / "work", slot / "home", slot / "ipc", zygote.place.kit_parent,
                      slot / "kernel.log")
    try:
        for folder in (space.workdir, space.home, space.ipc):
            folder.mkdir()
        for item in notebook_path.parent.iterdir():
            if item.is_file() and not item.is_symlink() and \
                    item.stat().st_size < MAX_COPIED_FILE:
                shutil.copyfile(item, space.workdir / item.name)
        sandbox.hand_over([slot])  # the kernel's user owns its slot (where it is not ours)
        yield space
    finally:
        shutil.rmtree(slot, ignore_errors=True)


def tasks_of(uid: int) -> int:
    """How many tasks (threads included) the user ``uid`` runs now: the process limit counts
    them per user, so a child's allowance is added to what its user already runs."""
    count = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines()
                          if ":" in line)
        except OSError:
            continue
        if int(fields.get("Uid", "-1").split()[0]) == uid:
            count += int(fields.get("Threads", "1").strip())
    return count


def spawn_request(zygote: Channel, slot: Path, limits: Limits, cwd: Path, log: Path,
                  env: dict[str, str]) -> dict[str, Any]:
    """The zygote's ``spawn`` command for a child in ``slot`` (a kernel, or a judge with more
    fields): its namespaces, what it may see, its limits, where it runs and writes."""
    inside = zygote.inside
    sandboxed = zygote.place.sandboxed
    uid = sandbox.NOBODY if sandboxed and os.geteuid() == 0 else os.getuid()
    # unsandboxed, a grader run as root still never runs a notebook (or a judge) as root
    user = sandbox.NOBODY if not sandboxed and sandbox.runs_kernels_as_nobody() else None
    return {"op": "spawn", "isolate": sandboxed, "user": user,
            "slot": str(inside(slot)), "slots": str(inside(zygote.place.slots)),
            "hide": [str(inside(zygote.place.home))],
            "cwd": str(inside(cwd)), "log": str(inside(log)), "env": env,
            "memory_mb": limits.memory_mb, "cpu_s": limits.cpu_s, "fsize_mb": limits.fsize_mb,
            "nproc": limits.nproc + tasks_of(uid) if limits.nproc else 0,
            "tmp_mb": limits.tmp_mb}


class _ForkedKernel(LocalProvisioner):
    """jupyter_client's provisioner for a kernel forked by the zygote: the connection file
    is written as for any local kernel, the process comes from ``Channel.spawn``."""

    zygote: Channel
    space: Workspace
    limits: Limits
    pid: int | None = None
    isolated: bool = False
    why: str = ""

    @property
    def has_process(self) -> bool:
        return self.pid is not None

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        space = self.space
        inside = self.zygote.inside
        # the kernel binds its sockets where it sees the ipc folder; the grader connects to
        # the same files where it sees them
        info = dict(self.connection_info)
        info["ip"] = str(inside(space.ipc / "kernel"))
        info["key"] = info["key"].decode() if isinstance(info["key"], bytes) else info["key"]
        (space.ipc / "kernel.json").write_text(json.dumps(info))
        sandbox.hand_over([space.ipc])
        answer = self.zygote.ask({
            **spawn_request(self.zygote, space.slot, self.limits, space.workdir, space.log,
                            base_env(inside(space.home), inside(space.kit_parent))),
            "connection_file": str(inside(space.ipc / "kernel.json"))})
        self.pid, self.isolated, self.why = int(answer["pid"]), bool(answer["isolated"]), \
            str(answer.get("why", ""))
        return self.connection_info

    async def poll(self) -> int | None:
        if self.pid is None:
            return 0
        code = self.zygote.ask({"op": "poll", "pid": self.pid})["exit"]
        return None if code is None else int(code)

    async def wait(self) -> int | None:
        while (code := await self.poll()) is None:
            await asyncio.sleep(0.05)
        return code

    async def send_signal(self, signum: int) -> None:
        # interrupts travel as messages (interrupt_mode "message"); any signal sent here is
        # a request to stop the kernel, and the zygote knows one way: kill its namespace
        await self.kill()

    async def kill(self, restart: bool = False) -> None:
        if self.pid is not None:
            self.zygote.ask({"op": "kill", "pid": self.pid})

    async def terminate(self, restart: bool = False) -> None:
        await self.kill(restart)

    async def cleanup(self, restart: bool = False) -> None:
        self.pid = None


async def _wait_until_answering(client: KernelClient, timeout: float | None = None) -> None:
    """Return once the kernel answers a kernel_info request on the shell channel and its
    status messages for that request arrive on IOPub (so IOPub is connected: a subscriber
    misses what was published before it joined). jupyter_client's ``wait_for_ready`` does the
    same and then waits for 0.2 s of silence on IOPub; the grader matches every message to its
    request, so nothing needs flushing, and each kernel starts 0.2 s sooner."""
    deadline = time.monotonic() + (float("inf") if timeout is None else timeout)
    while True:
        msg_id = client.kernel_info()
        reply = await _reply_to(client.shell_channel, msg_id, 1.0)
        if reply is not None and await _reply_to(client.iopub_channel, msg_id, 0.2) is not None:
            client._handle_kernel_info_reply(reply)
            return
        if not await client._async_is_alive():
            raise RuntimeError("Kernel died before replying to kernel_info")
        if time.monotonic() > deadline:
            raise RuntimeError(f"Kernel didn't respond in {timeout:g} seconds")


async def _reply_to(channel: Any, msg_id: str, timeout: float) -> dict[str, Any] | None:
    """The first message on ``channel`` whose parent is ``msg_id`` within ``timeout`` s (older
    messages are dropped), or None."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = cast(dict[str, Any], await ensure_async(channel.get_msg(timeout=left)))
        except queue.Empty:
            return None
        if msg.get("parent_header", {}).get("msg_id") == msg_id:
            return msg
    return None


# How long the outputs of a request may lag behind its reply before they are taken as lost.
IOPUB_GRACE_S = 1.0
RECONNECT_TIMEOUT_S = 30.0

# A client connects before the new kernel has bound its sockets; ZeroMQ then retries every
# RECONNECT_IVL ms (default 100), and the first answer waits for the next retry.
RECONNECT_MS = 5


class AsyncClient(AsyncKernelClient):
    """The client nbclient runs the notebook through (``_wait_until_answering``, and quick
    reconnects)."""

    wait_for_ready = _wait_until_answering

    def _context_default(self) -> zmq.asyncio.Context:
        context = super()._context_default()
        context.setsockopt(zmq.RECONNECT_IVL, RECONNECT_MS)
        return context


class BlockingClient(BlockingKernelClient):
    """The client the check stage calls the kernel through (``_wait_until_answering``, and
    quick reconnects)."""

    wait_for_ready = run_sync(_wait_until_answering)

    def _context_default(self) -> zmq.Context[Any]:
        context = super()._context_default()
        context.setsockopt(zmq.RECONNECT_IVL, RECONNECT_MS)
        return context


def _kernelspec(root: Path) -> KernelSpecManager:
    spec_dir = root / "kernels" / KERNEL_NAME
    if not spec_dir.is_dir():
        # the argv is never run (the zygote forks the kernel); interrupts travel as messages.
        # Written whole or not at all: the grading processes of one run share the folder.
        spec_dir.mkdir(parents=True, exist_ok=True)
        draft = spec_dir / f".kernel.json.{os.getpid()}"
        draft.write_text(json.dumps(
            {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
             "display_name": "nncourse grader", "language": "python",
             "interrupt_mode": "message"}))
        draft.replace(spec_dir / "kernel.json")
    return KernelSpecManager(kernel_dirs=[str(root / "kernels")], ensure_native_kernel=False)


@contextmanager
def started_kernel(space: Workspace, limits: Limits, zygote: Channel
                   ) -> Iterator[KernelManager]:
    """A kernel forked by ``zygote`` into ``space`` under ``limits``; gone when the context
    exits (and everything it started with it)."""
    # ipc sockets in the slot: no TCP port, nothing reachable from outside
    km = KernelManager(kernel_name=KERNEL_NAME, transport="ipc", ip=str(space.ipc / "kernel"),
                       connection_file=str(space.ipc / "connection.json"),
                       kernel_spec_manager=_kernelspec(zygote.place.root),
                       client_class=f"{__name__}.AsyncClient")
    km.blocking_class = BlockingClient
    km.kernel_id = str(uuid.uuid4())
    provisioner = _ForkedKernel(kernel_id=km.kernel_id, kernel_spec=km.kernel_spec, parent=km)
    provisioner.zygote, provisioner.space, provisioner.limits = zygote, space, limits
    km.provisioner = provisioner
    try:
        km.start_kernel()
        if zygote.place.sandboxed and not provisioner.isolated:
            raise ZygoteError(f"a kernel could not get namespaces of its own: "
                              f"{provisioner.why}")
        yield km
    finally:
        if km.has_kernel:
            km.shutdown_kernel(now=True)


def log_size(log: Path) -> int:
    """How much the kernel has written to its log so far (bytes)."""
    try:
        return log.stat().st_size
    except OSError:
        return 0


def log_tail(log: Path, since: int = 0) -> str:
    """The last line the kernel wrote to its log after byte ``since`` (past its start-up
    banner), or ""."""
    try:
        with log.open("rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return last_line(text)


Hook = Callable[[dict[str, Any]], None]


class KernelSession:
    """The live kernel that ran a notebook, as the check stage uses it: ``request`` is the
    protocol's transport. Once the kernel dies or stops answering, ``lost`` says why, and every
    later request fails at once with that reason (the student's, not the grader's)."""

    def __init__(self, km: KernelManager, space: Workspace, start_timeout: float,
                 max_reply_bytes: int = 0) -> None:
        self._km = km
        self._space = space
        self.workdir = space.workdir
        self._max_reply = max_reply_bytes
        self._kc = self._client(start_timeout)
        self._log_start = log_size(space.log)  # what the kernel says from here on
        self.lost = ""

    def install_bridge(self, timeout: float) -> None:
        """Load the kernel's end of the protocol (``grader.kernel.bridge.kernel_end``) into the
        kernel; raise StudentError (and set ``lost``) if the kernel cannot."""
        code = (f"__import__({BRIDGE_PACKAGE + '.kernel_end'!r}, fromlist=['install'])"
                f".install(get_ipython(), {json.dumps(REBUILDABLE)})")
        reply = self._execute(code, timeout, lambda msg: None)
        if reply.get("status") != "ok":
            self.lost = (f"the kernel could not load the grader's side of the checks: "
                         f"{reply.get('ename')}: {first_line(str(reply.get('evalue', '')))}")
            raise StudentError(self.lost)

    def send_source(self, source: str, timeout: float) -> None:
        """Run ``source`` in the kernel as a cell would (the audit and the tests redefine a
        notebook's functions this way); raise StudentError if it raises or runs too long."""
        reply = self._execute(source, timeout, lambda msg: None)
        if reply.get("status") != "ok":
            raise StudentError(f"the code sent to the kernel raised {reply.get('ename')}: "
                               f"{clip(str(reply.get('evalue', '')), QUOTE_CHARS)}")

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
            if reply.get("ename"):
                raise StudentError(f"the kernel sent no answer: {one_line(str(reply['ename']))}: "
                                   f"{first_line(str(reply.get('evalue', '')))}")
            limit = f" (an answer larger than {self._max_reply / 2**20:g} MB is dropped)" \
                if self._max_reply else ""
            self._reconnect()  # ZeroMQ closed the connection that carried the dropped answer
            raise StudentError(f"the kernel sent no answer{limit}")
        try:
            answer = json.loads(payloads[-1])
        except ValueError as exc:
            raise StudentError("the kernel's answer was not valid JSON") from exc
        except RecursionError:
            raise StudentError("the kernel's answer was nested too deeply") from None
        if not isinstance(answer, dict):
            raise StudentError("the kernel's answer was not a JSON object")
        return answer

    def _client(self, timeout: float) -> BlockingKernelClient:
        """A client connected to the kernel, once it answers on every channel."""
        client = self._km.blocking_client()
        # ZeroMQ drops a message past this size (and the connection that sent it) before any of
        # it is held here: what a kernel answers can never fill the grader's memory
        if self._max_reply:
            client.context.setsockopt(zmq.MAXMSGSIZE, self._max_reply)
        client.start_channels()
        client.wait_for_ready(timeout=timeout)
        return client

    def _reconnect(self) -> None:
        """A new client: the connection that carried a dropped answer is closed."""
        self._kc.stop_channels()
        try:
            self._kc = self._client(RECONNECT_TIMEOUT_S)
        except RuntimeError:
            self.lost = "the kernel stopped answering during the checks"

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
        reply: dict[str, Any] | None = None
        replied = 0.0  # when the reply came
        idle = False
        while not idle:
            try:
                msg = self._kc.get_iopub_msg(timeout=self._poll(deadline))
            except queue.Empty:
                if not self._km.is_alive():
                    raise StudentError(self._died()) from None
                if reply is None:
                    reply = self._reply_if_any(msg_id)
                    replied = time.monotonic()
                elif time.monotonic() > replied + IOPUB_GRACE_S:
                    # the reply came but the kernel's outputs stopped: a message past the size
                    # limit was dropped with its connection, and the rest of them with it
                    return reply
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            hook(msg)
            idle = (msg["msg_type"] == "status"
                    and msg["content"].get("execution_state") == "idle")
        while reply is None:
            try:
                found = self._kc.get_shell_msg(timeout=self._poll(deadline))
            except queue.Empty:
                if not self._km.is_alive():
                    raise StudentError(self._died()) from None
                continue
            if found["parent_header"].get("msg_id") == msg_id:
                reply = cast(dict[str, Any], found["content"])
        return reply

    def _reply_if_any(self, msg_id: str) -> dict[str, Any] | None:
        """The execute reply to ``msg_id`` if it has come (other replies are dropped)."""
        while True:
            try:
                found = self._kc.get_shell_msg(timeout=0)
            except queue.Empty:
                return None
            if found["parent_header"].get("msg_id") == msg_id:
                return cast(dict[str, Any], found["content"])

    @staticmethod
    def _poll(deadline: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return min(0.5, left)

    def _died(self) -> str:
        said = log_tail(self._space.log, self._log_start)
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
