"""Kernels and judges as plain processes, where the fork server cannot run: a student's macOS or
Windows laptop (``grader check``), or a Linux where it fails to start. The same workspace and
the same session the checks talk through, started by jupyter_client's local provisioner through
``_grader_bridge.launch`` under the resource limits the platform has. No sandbox and no
namespaces: only the student's own notebook runs here, on their own machine. Nothing here needs
Linux.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

from grader.kernel.bridge import launch
from grader.kernel.session import (
    KERNEL_NAME,
    MAX_COPIED_FILE,
    AsyncClient,
    BlockingClient,
    Workspace,
)
from grader.records import Limits

BRIDGE_PACKAGE = "_grader_bridge"  # the name grader/kernel/bridge/ has in the kernel


def limits_json(limits: Limits) -> str:
    """What ``launch`` applies, as its first argument."""
    return json.dumps({"memory_mb": limits.memory_mb, "cpu_s": limits.cpu_s,
                       "fsize_mb": limits.fsize_mb})


def what_it_limits() -> str:
    """The limits a plain kernel gets on this platform, in words."""
    if os.name == "nt":
        return "no resource limits (Windows), the time limits only"
    if sys.platform == "darwin":
        return "CPU time and file size limits (macOS sets no memory limit), and the time limits"
    return "memory, CPU time and file size limits, and the time limits"


def _bridge_copy(root: Path) -> Path:
    """A folder holding the kernel's end of the protocol as ``_grader_bridge``; returned to be
    put first on the kernel's PYTHONPATH."""
    parent = root / "kit"
    shutil.copytree(Path(launch.__file__).parent, parent / BRIDGE_PACKAGE,
                    ignore=shutil.ignore_patterns("__pycache__"))
    return parent


def _env(kit_parent: Path) -> dict[str, str]:
    """The student's own environment, with the bridge importable and the kernel on one
    thread, drawing figures without a display, as the grader's kernels do."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ,
            "PYTHONPATH": str(kit_parent) + (os.pathsep + path if path else ""),
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
            "MPLBACKEND": "Agg", "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            "JUPYTER_PLATFORM_DIRS": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def _kernelspec(root: Path, limits: Limits) -> KernelSpecManager:
    spec_dir = root / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", f"{BRIDGE_PACKAGE}.launch", limits_json(limits),
                 "kernel", "-f", "{connection_file}", "--HistoryManager.enabled=False"],
        "display_name": "nncourse grader (plain)", "language": "python",
        "interrupt_mode": "message"}))
    return KernelSpecManager(kernel_dirs=[str(root / "kernels")], ensure_native_kernel=False)


@contextmanager
def started_kernel(notebook_path: Path, limits: Limits
                   ) -> Iterator[tuple[Workspace, KernelManager]]:
    """A fresh workspace (the regular files beside the notebook copied into its working folder)
    and a plain kernel running there; both gone when the context exits."""
    root = Path(tempfile.mkdtemp(prefix="grader-kernel-"))
    try:
        kit_parent = _bridge_copy(root)
        space = Workspace(root, root / "work", root / "home", root / "ipc", kit_parent,
                          root / "kernel.log")
        for folder in (space.workdir, space.home, space.ipc):
            folder.mkdir()
        for item in notebook_path.parent.iterdir():
            if item.is_file() and not item.is_symlink() and \
                    item.stat().st_size < MAX_COPIED_FILE:
                shutil.copyfile(item, space.workdir / item.name)
        km = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=_kernelspec(root, limits),
                           connection_file=str(space.ipc / "connection.json"),
                           client_class=f"{AsyncClient.__module__}.AsyncClient")
        km.blocking_class = BlockingClient
        with space.log.open("wb") as log:
            km.start_kernel(cwd=str(space.workdir), env=_env(kit_parent), stdout=log,
                            stderr=log)
        try:
            yield space, km
        finally:
            if km.has_kernel:
                km.shutdown_kernel(now=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_judge(private: Path, name: str, artifacts: Path, limits: Limits, log: Path,
              timeout: float) -> bool:
    """Run a judge (``_grader_bridge.judging``) as a plain process in ``private``; False when
    it ran past ``timeout`` seconds (it is killed)."""
    kit_parent = _bridge_copy(private.parent)
    command = [sys.executable, "-m", f"{BRIDGE_PACKAGE}.launch", limits_json(limits), "judge",
               str(private), name, str(artifacts)]
    with log.open("wb") as out:
        try:
            subprocess.run(command, cwd=private, env=_env(kit_parent), stdout=out,
                           stderr=subprocess.STDOUT, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return False
    return True
