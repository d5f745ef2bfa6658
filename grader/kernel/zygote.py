"""Where kernels come from: one fork server (a zygote) per grading run, shared by its workers.

The zygote (``grader.kernel.bridge.serve``) is started once, inside the sandbox when it works here,
and has already imported torch, numpy, matplotlib, the course kit and the IPython kernel. Each
submission's kernel is a fresh fork of it, in namespaces of its own, that serves that one
submission and is then discarded: ``import torch`` is paid once per run, and nothing of one
student's kernel reaches the next. Each grading process talks to it over a channel of its own
(a connection to the zygote's socket, served by a fork of the zygote that is its kernels'
parent); a worker process is given the zygote's place (``share``) rather than starting one.

Beside its slots (one folder per kernel, see ``grader.kernel.session.workspace``) lies a
read-only copy of the course kit and of ``grader.kernel.bridge`` (as the package
``_grader_bridge``); the checks, the solutions and the gradebook are nowhere in reach. The
socket lies in the slots folder, which each kernel sees covered by an empty one.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import itertools
import json
import multiprocessing.util
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from grader.errors import ZygoteError
from grader.kernel import bridge, sandbox
from grader.kernel.bridge.sockets import short_address

KIT_PACKAGE = "nncourse"
BRIDGE_PACKAGE = "_grader_bridge"  # the name grader/kernel/bridge/ has inside the sandbox


def unsupported() -> str:
    """Why kernels cannot come from a fork server here ("" where they can): it forks, and
    enters Linux namespaces and resource limits. Elsewhere (macOS, Windows) a kernel is a
    plain process (``grader.kernel.plain``)."""
    if not sys.platform.startswith("linux"):
        return f"the kernels' fork server runs on Linux only (this is {sys.platform})"
    if not hasattr(os, "fork"):
        return "this Python cannot fork"
    if importlib.util.find_spec("resource") is None:
        return "this Python has no resource module"
    return ""


def kit_source() -> Path:
    """The folder of the course kit package, as installed or in the source tree (found, not
    imported: importing it imports torch)."""
    spec = importlib.util.find_spec(KIT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ZygoteError(f"the course kit ({KIT_PACKAGE}) is not installed")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


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


SOCKET = ".fork-server.sock"  # in the slots folder, which every kernel sees covered


@dataclass(frozen=True)
class Place:
    """Where a fork server lives, as another process of the same run reaches it."""

    root: Path
    sandboxed: bool

    INSIDE = Path("/grader")

    def inside(self, path: Path) -> Path:
        """Where the kernels see ``path`` (a folder under the root)."""
        return self.INSIDE / path.relative_to(self.root) if self.sandboxed else path

    @property
    def kit_parent(self) -> Path:
        return self.root / "kit"

    @property
    def slots(self) -> Path:
        return self.root / "slots"

    @property
    def home(self) -> Path:
        """The zygote's own home (its imports' caches); no kernel sees it."""
        return self.root / "home"

    @property
    def socket(self) -> Path:
        return self.slots / SOCKET


class Zygote:
    """The zygote process of this run: started once, inside the sandbox when it works here;
    restarted if it dies. Making one returns at once (the zygote imports in the background);
    ``wait_ready`` waits until it listens, and channels (``Channel``) connect to it.

    Sandboxed, its folder is seen inside as ``/grader`` (outside ``/tmp``, which each kernel
    replaces with a private one), and each kernel gets namespaces of its own; unsandboxed (a
    laptop without bubblewrap), kernels are plain forks under resource limits only."""

    def __init__(self, sandboxed: bool) -> None:
        self.place = Place(Path(tempfile.mkdtemp(prefix="grader-zygote-")), sandboxed)
        root = self.place.root
        self._log = root / "zygote.log"
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(kit_source(), self.place.kit_parent / KIT_PACKAGE, ignore=ignore)
        shutil.copytree(Path(bridge.__file__).parent, self.place.kit_parent / BRIDGE_PACKAGE,
                        ignore=ignore)
        self.place.slots.mkdir()
        self.place.home.mkdir()
        if not sandboxed and sandbox.runs_kernels_as_nobody():
            root.chmod(0o755)  # its kernels run as nobody and must reach their slots
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._ready = False
        self._start()

    def _start(self) -> None:
        place = self.place
        env = base_env(place.inside(place.home), place.inside(place.kit_parent))
        command = [sys.executable, "-m", f"{BRIDGE_PACKAGE}.serve",
                   str(place.inside(place.socket))]
        if place.sandboxed:
            command = sandbox.wrap(
                command, read_write=[(place.slots, place.inside(place.slots)),
                                     (place.home, place.inside(place.home))],
                read_only=[(place.kit_parent, place.inside(place.kit_parent))], env=env,
                cwd=place.inside(place.kit_parent))
            sandbox.hand_over([place.slots, place.home])
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env,
                cwd=place.kit_parent, start_new_session=True)
        self._ready = False

    def wait_ready(self, timeout: float = 120) -> Place:
        """Wait until the zygote listens (restarting it if it died); return its place."""
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._start()
            if not self._ready:
                said = self._read(timeout)
                if not said.get("ready"):
                    raise ZygoteError(f"the kernel fork server did not start: it cannot "
                                      f"import {', '.join(said.get('missing', [])) or said}")
                self._ready = True
            return self.place

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

    def close(self) -> None:
        """Stop the fork server (its channels and their kernels die with it); remove its
        folders."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            try:
                assert process.stdin is not None
                process.stdin.write(b"quit\n")
                process.stdin.close()
                process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                process.kill()
                process.wait()
        shutil.rmtree(self.place.root, ignore_errors=True)


class Channel:
    """One process's channel to a fork server: ``ask`` sends a command to the fork of the
    zygote that serves this channel, and ``spawn`` answers come from there. Thread-safe."""

    def __init__(self, place: Place) -> None:
        self.place = place
        self._numbers = itertools.count()
        self._lock = threading.Lock()
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with short_address(str(place.socket)) as address:
                self._socket.connect(address)
        except OSError as exc:
            self._socket.close()
            raise ZygoteError(f"cannot reach the kernel fork server at {place.socket}: "
                              f"{exc}") from None
        self._channel = self._socket.makefile("rwb")
        self.broken = False

    def inside(self, path: Path) -> Path:
        """Where the kernels see ``path`` (a folder under the fork server's root)."""
        return self.place.inside(path)

    def usable(self) -> bool:
        """Whether the channel still looks open: its server never speaks unasked, so anything
        to read between commands means it closed (the zygote died, or the server did)."""
        if self.broken:
            return False
        with self._lock:
            readable, _, _ = select.select([self._socket], [], [], 0)
        if readable:
            self.close()
        return not readable

    def ask(self, request: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
        """Send one command; return the answer (ZygoteError if it fails)."""
        with self._lock:
            if self.broken:
                raise ZygoteError("the channel to the kernel fork server is closed")
            try:
                self._socket.settimeout(timeout)
                self._channel.write(json.dumps(request).encode() + b"\n")
                self._channel.flush()
                line = self._channel.readline()
            except OSError as exc:
                self.broken = True
                raise ZygoteError(f"the kernel fork server stopped answering: {exc}") from None
            if not line:
                self.broken = True
                raise ZygoteError("the kernel fork server closed the channel")
        answer = cast(dict[str, Any], json.loads(line))
        if not answer.get("ok"):
            raise ZygoteError(f"the kernel fork server refused {request.get('op')}: "
                              f"{answer.get('error')}")
        return answer

    def new_slot(self) -> Path:
        """A fresh, empty slot folder for one kernel (named for this process: channels of
        other processes share the folder)."""
        slot = self.place.slots / f"{os.getpid()}-{next(self._numbers)}"
        slot.mkdir()
        return slot

    def close(self) -> None:
        """Close the channel (the kernels spawned through it are killed)."""
        self.broken = True
        with contextlib.suppress(OSError):
            self._channel.close()
        with contextlib.suppress(OSError):
            self._socket.close()


_SERVERS: dict[bool, Zygote] = {}  # the fork servers this process started
_SHARED: dict[bool, Place] = {}  # the fork servers of another process this one uses
_CHANNELS: dict[bool, Channel] = {}
_LOCK = threading.Lock()


def start(sandboxed: bool) -> Zygote:
    """This process's fork server (sandboxed or not), started now if it is not running yet
    (returns at once; it is stopped when the process exits)."""
    with _LOCK:
        return _server(sandboxed)


def _server(sandboxed: bool) -> Zygote:
    if sandboxed not in _SERVERS:
        if not _SERVERS:
            atexit.register(close_all)
            # a multiprocessing worker leaves through os._exit, past atexit: its finalizers
            multiprocessing.util.Finalize(None, close_all, exitpriority=10)
        _SERVERS[sandboxed] = Zygote(sandboxed)
    return _SERVERS[sandboxed]


def to_share(sandboxed: bool) -> dict[bool, Place]:
    """This process's fork server, started if need be and ready, as ``share`` takes it in a
    worker; nothing if it cannot start (each worker then tries its own, and its results say
    why if that fails too)."""
    try:
        return {sandboxed: start(sandboxed).wait_ready()}
    except ZygoteError:
        return {}


def share(places: dict[bool, Place]) -> None:
    """Use the fork servers at ``places`` (started by the process that started this one)
    instead of starting this process's own."""
    with _LOCK:
        _SHARED.update(places)


def channel_for(sandboxed: bool) -> Channel:
    """This process's channel to a fork server (sandboxed or not): to the shared one if this
    process was given one (``share``) and it answers, else to this process's own, started on
    first use. A channel that closed is replaced (a zygote that died, restarted), so that the
    next kernel does not fail on it."""
    with _LOCK:
        channel = _CHANNELS.get(sandboxed)
        if channel is not None and channel.usable():
            return channel
        channel = None
        place = _SHARED.get(sandboxed)
        if place is not None:
            try:
                channel = Channel(place)
            except ZygoteError:
                del _SHARED[sandboxed]  # gone: this process starts its own from now on
        if channel is None:
            channel = Channel(_server(sandboxed).wait_ready())
        _CHANNELS[sandboxed] = channel
        return channel


def close_all() -> None:
    """Close this process's channels and stop the fork servers it started (a worker that is
    done, or the process at exit)."""
    with _LOCK:
        for channel in _CHANNELS.values():
            channel.close()
        _CHANNELS.clear()
        for server in _SERVERS.values():
            server.close()
        _SERVERS.clear()
