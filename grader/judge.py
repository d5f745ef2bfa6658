"""Judging files a student's kernel wrote (exported programs, ONNX models) without trusting them.

Some loaders run code from the file they load: in PyTorch 2.13 ``torch.export.load`` falls back
to ``torch.load(weights_only=False)`` when the safe load fails. So an artifact is opened only in
a separate process that holds no secrets: it gets a snapshot of the kernel's working folder
(regular files only, read-only), the inputs the check chose (no labels), grader-written code
that loads and runs the artifact, the same sandbox and limits as a kernel, and nothing else. It
hands back data only (``torch.save`` of tensors and plain values), which the grader reads with
``torch.load(weights_only=True)``; the verdict (accuracy against the labels, parity with the
reference outputs) is computed in the grader.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from grader import sandbox
from grader.protocol import StudentError
from grader.records import Limits
from grader.sandbox import use_sandbox

MAX_SNAPSHOT_BYTES = 256 * 2**20

# Runs inside the sandbox. It trusts the grader's inputs and code, and the grader trusts nothing
# it writes back beyond "tensors and plain values".
_RUNNER = r'''
import sys, traceback
import torch
torch.set_num_threads(1)
folder, private, name = sys.argv[1], sys.argv[2], sys.argv[3]
inputs = torch.load(private + "/inputs.pt", weights_only=True)
source = open(private + "/judge.py").read()
try:
    namespace = {"__name__": "judge"}
    exec(compile(source, "judge.py", "exec"), namespace)
    result = {"ok": True, "value": namespace[name](folder, inputs)}
except BaseException as exc:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    result = {"ok": False, "error": text[-2000:]}
torch.save(result, private + "/result.pt")
'''


def snapshot(workdir: Path, dest: Path) -> dict[str, int]:
    """Copy the regular files of ``workdir`` (recursively, links never followed) into ``dest``;
    return their relative paths and sizes. Stops with StudentError past MAX_SNAPSHOT_BYTES."""
    files: dict[str, int] = {}
    total = 0
    for folder, dirs, names in os.walk(workdir, followlinks=False):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
        for name in names:
            source = Path(folder) / name
            if source.is_symlink() or not source.is_file():
                continue
            relative = source.relative_to(workdir)
            size = source.stat().st_size
            total += size
            if total > MAX_SNAPSHOT_BYTES:
                raise StudentError(f"the working folder holds more than "
                                   f"{MAX_SNAPSHOT_BYTES // 2**20} MB of files")
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            try:  # O_NOFOLLOW: the live kernel may swap a file for a link after the check above
                fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue
            with os.fdopen(fd, "rb") as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            files[str(relative)] = size
    return files


class Judge:
    """Runs grader-written judging code on a snapshot of one kernel's working folder."""

    def __init__(self, workdir: Path, limits: Limits) -> None:
        self._workdir = workdir
        self._limits = limits

    def files(self) -> dict[str, int]:
        """The files the kernel has written so far: relative path -> size in bytes."""
        with tempfile.TemporaryDirectory(prefix="grader-files-") as tmp:
            return snapshot(self._workdir, Path(tmp))

    def run(self, source: str, inputs: Mapping[str, Any], timeout: float = 120.0,
            name: str = "judge") -> Any:
        """Run the function ``name(folder, inputs)`` that ``source`` defines in a sandboxed
        process over a snapshot of the working folder; return its result, read as data only."""
        sandboxed, _ = use_sandbox(self._limits)
        with tempfile.TemporaryDirectory(prefix="grader-judge-") as tmp:
            root = Path(tmp)
            folder, private = root / "artifacts", root / "private"
            folder.mkdir()
            private.mkdir()
            snapshot(self._workdir, folder)
            torch.save(dict(inputs), private / "inputs.pt")
            (private / "judge.py").write_text(source, encoding="utf-8")
            inner = [sys.executable, "-c", _RUNNER, str(folder), str(private), name]
            env = {"PATH": "/usr/bin:/bin", "HOME": str(private), "LANG": "C.UTF-8",
                   "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
            if sandboxed:
                inner = sandbox.wrap(inner, read_write=[private], read_only=[folder], env=env,
                                     cwd=private, tmp_mb=self._limits.tmp_mb)
                sandbox.hand_over([private])
            limits = self._limits
            command = [sys.executable, "-m", "grader.kernel_launch",
                       "--memory-mb", str(limits.memory_mb), "--cpu-s", str(limits.cpu_s),
                       "--fsize-mb", str(limits.fsize_mb), "--", *inner]
            try:
                done = subprocess.run(command, env=env, cwd=private, capture_output=True,
                                      timeout=timeout, start_new_session=True)
            except subprocess.TimeoutExpired:
                raise StudentError(f"judging the files took longer than {timeout:g} s") from None
            result_path = private / "result.pt"
            if not result_path.is_file():
                tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
                raise StudentError(f"judging the files failed: {tail[0][:300]}")
            try:
                result = torch.load(io.BytesIO(result_path.read_bytes()), weights_only=True)
            except Exception as exc:
                raise StudentError("the judge's answer was not plain data "
                                   f"({type(exc).__name__})") from exc
        if not isinstance(result, dict) or "ok" not in result:
            raise StudentError("the judge's answer was not plain data")
        if not result["ok"]:
            raise StudentError(f"loading or running the files failed: {result.get('error')}")
        return result.get("value")
