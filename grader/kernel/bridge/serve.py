"""The kernels' fork server: a process that has imported what notebooks import (torch, numpy,
matplotlib, the course kit, the IPython kernel) and forks a fresh kernel for each submission,
so that those imports are paid once per grading run, not once per notebook. The judges that
open the files a kernel wrote (``grader.kernel.judge``) are forked the same way.

It runs inside the sandbox and holds nothing secret: no checks, no solutions, nothing of any
submission. It never runs a student's code itself; each kernel is a forked child that starts
from the zygote's clean memory, in namespaces of its own (user, mount, pid, ipc, network, uts):
a private ``/tmp`` and ``/dev/shm``, no process, socket or SysV object of an earlier kernel in
sight, and when the kernel exits, everything it started dies with it (it is its namespace's
pid 1). Its capabilities inside its namespaces are dropped before the kernel starts.

It listens on a Unix socket (its path is its one argument); each connection is one grading
process's channel, served by a child forked for it (its kernels are that child's children, and
die when the channel closes). A channel carries one JSON object per line:

    {"op": "spawn", "isolate", "user", "slot", "slots", "hide", "read_only", "cwd", "env",
     "log", "memory_mb", "cpu_s", "fsize_mb", "nproc", "tmp_mb",
     and "connection_file" (a kernel) or "run": "judge", "artifacts", "name" (a judge)}
        -> {"ok": true, "pid": n, "isolated": true | false, "why": "..."}
    {"op": "poll", "pid": n}     -> {"ok": true, "exit": null | code}
    {"op": "kill", "pid": n}     -> {"ok": true}

The socket lies in the slots folder, which every kernel sees covered by an empty one. The
process that started the zygote holds its stdin and stdout: the zygote says on stdout when it
is ready (or what it cannot import), and exits when its stdin closes or says quit.

Nothing here imports the grader: inside the sandbox there is none.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import select
import signal
import socket
import sys
import time
from typing import Any

from . import jail, judging
from .sockets import short_address

PRELOAD = ("numpy", "torch", "nncourse", "matplotlib", "matplotlib.pyplot",
           "ipykernel.kernelapp", "ipykernel.ipkernel",
           # what starting a kernel imports (its debugger, magics, completer): 0.1 s a kernel
           "ipykernel.debugger", "IPython.core.completerlib", "IPython.extensions.storemagic",
           "tornado.queues", "tornado.platform.asyncio", "encodings.idna",
           # the kernel's end of the checks (installed in each kernel after its notebook ran)
           "_grader_bridge.kernel_end")
REQUIRED = ("ipykernel.kernelapp",)  # without it no kernel can start


def preload() -> list[str]:
    """Import what every kernel would import anyway (the children inherit it); return the
    modules that could not be imported."""
    missing = []
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            missing.append(f"{name} ({exc})")
    nncourse = sys.modules.get("nncourse")
    if nncourse is not None:
        nncourse.load_digits_split()  # reads and splits the data set once
    return missing


def _enter(request: dict[str, Any]) -> str:
    """Take the request's limits, working folder and environment; return the folder."""
    jail.set_limits(int(request.get("memory_mb", 0)), int(request.get("cpu_s", 0)),
                    int(request.get("fsize_mb", 0)), int(request.get("nproc", 0)))
    cwd = str(request["cwd"])
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(request["env"])
    return cwd


def _run_judge(request: dict[str, Any]) -> None:
    """Be a judge (``grader.kernel.judge``, see ``judging.judge``) in the request's folder and
    under its limits. Never returns."""
    private = _enter(request)
    judging.judge(private, str(request["name"]), str(request["artifacts"]))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _run_kernel(request: dict[str, Any]) -> None:
    """Become the kernel (in the pid namespace's first process); never returns."""
    cwd = _enter(request)
    # as `python -m ipykernel_launcher` run in ``cwd`` would see it (the zygote's own first
    # entry is the folder it was started in)
    sys.path[:] = [cwd, *sys.path[1:]]
    sys.argv = ["ipykernel_launcher", "-f", request["connection_file"],
                "--HistoryManager.enabled=False"]
    from ipykernel.kernelapp import IPKernelApp

    app = IPKernelApp.instance()
    app.initialize(sys.argv[1:])
    global _KERNEL_STARTED
    _KERNEL_STARTED = True  # from here on, an exception is how a running kernel ended
    app.start()


_KERNEL_STARTED = False


def _child(request: dict[str, Any], report: int) -> None:
    """The forked child: its own namespaces, then the kernel as pid 1 of the new pid
    namespace; it waits for the kernel and exits with its status."""
    isolated, why = False, "not asked to (no sandbox)"
    if request.get("isolate"):
        try:
            jail.own_namespaces()
            isolated, why = True, ""
        except OSError as exc:
            why = str(exc)
    # dies with the channel's server (set after unshare, which clears it)
    jail.die_with_parent()
    os.write(report, json.dumps({"isolated": isolated, "why": why}).encode())
    os.close(report)
    kernel = os.fork()
    if kernel == 0:
        try:
            jail.die_with_parent()
            log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.closerange(3, 1 << 16)
            if isolated:
                jail.private_mounts(request["slot"], request["slots"], int(request["tmp_mb"]),
                                    list(request.get("hide", [])),
                                    list(request.get("read_only", [])))
                socket.sethostname("sandbox")
                jail.drop_capabilities()
            else:
                if request.get("user") is not None:  # no sandbox, and the grader is root
                    os.setgroups([])
                    os.setgid(int(request["user"]))
                    os.setuid(int(request["user"]))
                jail.no_new_privileges()
            if request.get("run") == "judge":
                _run_judge(request)
            _run_kernel(request)
        except BaseException as exc:  # noqa: BLE001 - the kernel's last words go to its log
            what = "judge" if request.get("run") == "judge" else "kernel"
            ended = "stopped" if _KERNEL_STARTED else "did not start"
            os.write(2, f"grader zygote: the {what} {ended}: {exc!r}\n".encode())
        finally:
            os._exit(70)
    _pid, status = os.waitpid(kernel, 0)
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def _spawn(request: dict[str, Any]) -> dict[str, Any]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            os.setsid()
            os.closerange(3, write)  # the channel is its server's alone
            os.closerange(write + 1, 1 << 16)
            _child(request, write)
        finally:
            os._exit(70)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        said = f.read() or b'{"isolated": false, "why": "the child said nothing"}'
    return {"ok": True, "pid": pid, **json.loads(said)}


def _poll(pid: int) -> dict[str, Any]:
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return {"ok": True, "exit": -1}
    return {"ok": True, "exit": None if done == 0 else os.waitstatus_to_exitcode(status)}


def _kill(pid: int) -> None:
    """Kill a spawned child (its kernel dies with it, PDEATHSIG, and all it started: it is
    its pid namespace's first process) and reap it, so that the next poll already says it
    is gone (the grader's kernel manager polls every 0.1 s until it is)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(1000):  # a killed process is gone within milliseconds; at most 2 s
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                break
        except ChildProcessError:
            break
        time.sleep(0.002)


def _answer(request: dict[str, Any], spawned: set[int]) -> dict[str, Any]:
    """One command of a channel. ``spawned``: its children not yet reaped; only those are
    ever killed (a reaped pid may already be another process's)."""
    op = request.get("op")
    if op == "spawn":
        answer = _spawn(request)
        spawned.add(int(answer["pid"]))
        return answer
    pid = int(request["pid"])
    if op == "poll":
        answer = _poll(pid)
        if answer["exit"] is not None:
            spawned.discard(pid)
        return answer
    if op == "kill":
        if pid in spawned:
            _kill(pid)
            spawned.discard(pid)
        return {"ok": True}
    return {"ok": False, "error": f"unknown op {op!r}"}


def _serve_channel(conn: socket.socket) -> None:
    """A forked child serving one grading process's channel; when it closes, the kernels it
    spawned are killed and the child exits."""
    jail.die_with_parent()
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)  # the zygote's own stdin and stdout are its starter's, not a channel's
    os.dup2(null, 1)
    spawned: set[int] = set()
    with conn, conn.makefile("rwb") as channel:
        for line in channel:
            try:
                answer = _answer(json.loads(line), spawned)
            except Exception as exc:  # noqa: BLE001 - a failed command is answered, not fatal
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            channel.write(json.dumps(answer).encode() + b"\n")
            channel.flush()
    for pid in spawned:
        _kill(pid)


def _reap() -> None:
    """Wait for the channel servers that have exited."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def serve(address: str) -> None:
    """Preload, listen at ``address``, say so on stdout, then fork a server for each channel
    until stdin closes or says quit."""
    jail.not_dumpable()
    missing = preload()
    # what the preload made is never collected: a collection in a kernel would otherwise
    # touch (and so copy) every page of it that the fork shares
    gc.freeze()
    broken = [m for m in missing if m.split()[0] in REQUIRED]
    listener = None
    if not broken:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        mask = os.umask(0o177)  # only this user (and root) may connect
        try:
            with short_address(address) as short:
                listener.bind(short)
        finally:
            os.umask(mask)
        listener.listen(64)
    sys.stdout.write(json.dumps({"ok": not broken, "ready": not broken, "missing": missing,
                                 "pid": os.getpid()}) + "\n")
    sys.stdout.flush()
    if listener is None:
        return
    while True:
        readable, _, _ = select.select([0, listener.fileno()], [], [], 1.0)
        _reap()
        if 0 in readable:
            said = os.read(0, 4096)
            if not said or b"quit" in said:
                break
        if listener.fileno() in readable:
            conn, _ = listener.accept()
            if os.fork() == 0:
                try:
                    listener.close()
                    _serve_channel(conn)
                finally:
                    os._exit(0)
            conn.close()


if __name__ == "__main__":
    serve(sys.argv[1])
    os._exit(0)  # nothing left to flush; tearing down torch's modules takes most of a second
