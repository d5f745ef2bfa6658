"""The kernel's sandbox: bubblewrap (``bwrap``) around the IPython kernel.

Inside, the kernel sees a read-only system (``/usr``, the Python installation and its
environment), the submission's private working folder, the course kit and the socket folder it
talks to the grader through, and nothing else: not the course repository, the solutions, the
hidden checks, the gradebook or other students' work. It gets no network (a new network
namespace), its own process namespace (it cannot signal the grader), a private ``/tmp`` of
limited size, and a scrubbed environment. When the grader runs as root, the kernel is dropped
to an unprivileged user id (``nobody``), so resource limits on processes apply and files the
grader owns are out of reach.

Where ``bwrap`` is missing or cannot create namespaces (a student's laptop), ``probe()`` says
why, and the grader runs the kernel with resource limits only.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from grader.errors import SandboxUnavailable
from grader.records import Limits

NOBODY = 65534
_ETC = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
        "/etc/nsswitch.conf", "/etc/fonts")  # fonts: matplotlib's figures
_TOP_LEVEL = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


@dataclass(frozen=True)
class Probe:
    """Whether the kernel can be sandboxed here, and if not, why."""

    available: bool
    reason: str


def _is_root() -> bool:
    geteuid = getattr(os, "geteuid", None)  # none on Windows
    return geteuid is not None and geteuid() == 0


def _system_args() -> list[str]:
    args = ["--tmpfs", "/", "--ro-bind", "/usr", "/usr"]
    for top in _TOP_LEVEL:
        path = Path(top)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), top]
        elif path.is_dir():
            args += ["--ro-bind", top, top]
    args += ["--perms", "0755", "--dir", "/etc"]
    for item in _ETC:
        args += ["--ro-bind-try", item, item]
    return args


def _dirs_above(path: Path, made: set[str]) -> list[str]:
    # bwrap makes missing mount points 0700; make each parent 0755 so nobody can traverse it.
    args: list[str] = []
    for parent in reversed(path.parents):
        text = str(parent)
        if text != "/" and text not in made and not text.startswith("/usr"):
            made.add(text)
            args += ["--perms", "0755", "--dir", text]
    return args


Bind = Path | tuple[Path, Path]  # a folder seen at its own path, or (outside, inside)


def _pair(bind: Bind) -> tuple[Path, Path]:
    return bind if isinstance(bind, tuple) else (bind, bind)


def wrap(inner: list[str], *, read_write: Iterable[Bind], read_only: Iterable[Bind],
         env: Mapping[str, str], cwd: Path, tmp_mb: int = 512) -> list[str]:
    """The bwrap command line that runs ``inner`` in the sandbox described above; each folder
    of ``read_write`` and ``read_only`` is seen at its own path or, for an (outside, inside)
    pair, at the inside path."""
    args = ["bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--hostname", "sandbox"]
    if not _is_root():
        args += ["--unshare-user"]
    args += _system_args()
    # /tmp first: anything bound below it afterwards (a venv or course under /tmp) stays visible
    # sticky and world-writable: the sandboxed user may need a temporary file (dill, imported
    # by torch when installed, asks for one at import)
    args += ["--proc", "/proc", "--dev", "/dev",
             "--perms", "01777", "--size", str(tmp_mb * 2**20), "--tmpfs", "/tmp"]
    made: set[str] = {"/tmp"}
    runtime = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()}
    for path in sorted(runtime):
        if not str(path).startswith("/usr"):
            args += _dirs_above(path, made) + ["--ro-bind", str(path), str(path)]
    for outside, inside in map(_pair, read_only):
        args += _dirs_above(inside, made) + ["--ro-bind", str(outside), str(inside)]
    for outside, inside in map(_pair, read_write):
        args += _dirs_above(inside, made) + ["--bind", str(outside), str(inside)]
    args += ["--chdir", str(cwd), "--clearenv"]
    for key, value in sorted(env.items()):
        args += ["--setenv", key, value]
    args.append("--")
    if _is_root():
        args += ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                 "--inh-caps=-all", "--"]
    return args + inner


@functools.cache
def runs_kernels_as_nobody() -> bool:
    """Whether a grader run as root without the sandbox can run kernels as ``nobody``: only
    where that user can reach the Python installation (a pyenv under /root, say, it cannot,
    and the kernel then runs as the grader's user, with resource limits only)."""
    if not _is_root():
        return False
    for prefix in {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()}:
        for folder in (prefix, *prefix.parents):
            if not folder.stat().st_mode & 0o001:  # others may not traverse it
                return False
    return True


def hand_over(paths: Iterable[Path]) -> None:
    """Give the kernel's user (``nobody`` when the grader runs as root, sandboxed or not) the
    folders it must write; nothing to do when the grader is not root."""
    if not _is_root():
        return
    for top in paths:
        for folder, _dirs, files in os.walk(top):
            os.chown(folder, NOBODY, NOBODY)
            for name in files:
                os.chown(os.path.join(folder, name), NOBODY, NOBODY)


_NESTED_NAMESPACES = (
    "import ctypes, os, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "if libc.unshare(0x10000000 | 0x00020000 | 0x20000000 | 0x40000000 | 0x08000000):\n"
    "    sys.exit('no user namespace inside the sandbox: ' + os.strerror(ctypes.get_errno()))\n")


@functools.cache
def probe() -> Probe:
    """Try the sandbox once per process with a trivial command."""
    if not sys.platform.startswith("linux"):
        return Probe(False, f"the sandbox (bubblewrap) runs on Linux only (this is {sys.platform})")
    if shutil.which("bwrap") is None:
        return Probe(False, "bubblewrap (bwrap) is not installed")
    if _is_root() and shutil.which("setpriv") is None:
        return Probe(False, "setpriv (util-linux) is not installed")
    here = Path(sys.prefix).resolve()
    # each kernel also gets namespaces of its own inside the sandbox (grader/kernel/bridge/serve.py)
    command = wrap([sys.executable, "-c", _NESTED_NAMESPACES], read_write=[],
                   read_only=[], env={"PATH": "/usr/bin:/bin"}, cwd=Path("/tmp"))
    try:
        done = subprocess.run(command, capture_output=True, timeout=30, text=True)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Probe(False, f"bubblewrap failed to start: {exc}")
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return Probe(False, f"bubblewrap cannot create a sandbox here ({why}; python at {here})")
    return Probe(True, "kernel sandboxed with bubblewrap")


def use_sandbox(limits: Limits) -> tuple[bool, str]:
    """Whether kernels run sandboxed under ``limits``, and a sentence saying so (or why not).

    Raise SandboxUnavailable when ``limits.sandbox`` is "required" and it cannot be had."""
    as_nobody = "; kernels run as nobody" if runs_kernels_as_nobody() else ""
    if limits.sandbox == "off":
        return False, (f"kernel NOT sandboxed (limits.sandbox = \"off\"); resource limits "
                       f"only{as_nobody}")
    found = probe()
    if found.available:
        return True, found.reason
    if limits.sandbox == "required":
        raise SandboxUnavailable(f"the course requires the kernel sandbox: {found.reason}")
    return False, f"kernel NOT sandboxed: {found.reason}; resource limits only{as_nobody}"
