"""Judging files a student's kernel wrote (exported programs, ONNX models) without trusting them.

Some loaders run code from the file they load: in PyTorch 2.13 ``torch.export.load`` falls back
to ``torch.load(weights_only=False)`` when the safe load fails. So an artifact is opened only in
a separate process that holds no secrets: a child of the kernels' fork server (torch already
imported), in namespaces and a slot of its own like a kernel's, under the same limits; it gets
a snapshot of the kernel's working folder (regular files only, read-only), the inputs the check
chose (no labels), grader-written code that loads and runs the artifact, and nothing else. It
hands back data only (``torch.save`` of tensors and plain values), which the grader reads with
``torch.load(weights_only=True)``; the verdict (accuracy against the labels, parity with the
reference outputs) is computed in the grader. The judge's side is ``_run_judge`` in
``grader.kernel.bridge.serve``.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from grader.errors import StudentError, ZygoteError
from grader.kernel import plain, sandbox
from grader.kernel.sandbox import use_sandbox
from grader.kernel.session import log_tail, spawn_request
from grader.kernel.zygote import Channel, channel_for, unsupported
from grader.records import Limits
from grader.text import QUOTE_CHARS, clip

MAX_SNAPSHOT_BYTES = 256 * 2**20


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
                fd = os.open(source, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
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
        self.timeout_s = limits.judge_timeout_s  # a judge's time, unless a check says otherwise

    def files(self) -> dict[str, int]:
        """The files the kernel has written so far: relative path -> size in bytes."""
        with tempfile.TemporaryDirectory(prefix="grader-files-") as tmp:
            return snapshot(self._workdir, Path(tmp))

    def run(self, source: str, inputs: Mapping[str, Any], timeout: float,
            name: str = "judge") -> Any:
        """Run the function ``name(folder, inputs)`` that ``source`` defines in a sandboxed
        process over a snapshot of the working folder; return its result, read as data only.
        Where there is no fork server (macOS, Windows: a student's own run), a plain process."""
        if unsupported():
            with tempfile.TemporaryDirectory(prefix="grader-judge-") as tmp:
                folder, private, log = self._prepare(Path(tmp), source, inputs)
                if not plain.run_judge(private, name, folder, self._limits, log, timeout):
                    raise StudentError(f"judging the files took longer than {timeout:g} s")
                return _result(private, log)
        sandboxed, _ = use_sandbox(self._limits)
        zygote = channel_for(sandboxed)
        slot = zygote.new_slot()
        try:
            folder, private, log = self._prepare(slot, source, inputs)
            sandbox.hand_over([slot])
            env = {"PATH": "/usr/bin:/bin", "HOME": str(zygote.inside(private)),
                   "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
            request = {**spawn_request(zygote, slot, self._limits, private, log, env),
                       "run": "judge", "name": name, "artifacts": str(zygote.inside(folder)),
                       "read_only": [str(zygote.inside(folder))]}
            try:
                _wait(zygote, int(zygote.ask(request)["pid"]), timeout)
            except ZygoteError as exc:
                raise RuntimeError(f"the judge could not be started: {exc}") from None
            return _result(private, log)
        finally:
            shutil.rmtree(slot, ignore_errors=True)

    def _prepare(self, slot: Path, source: str, inputs: Mapping[str, Any]
                 ) -> tuple[Path, Path, Path]:
        """In ``slot``: the snapshot of the working folder, the judge's private folder with
        its code and inputs, and the path of its log."""
        folder, private, log = slot / "artifacts", slot / "private", slot / "judge.log"
        folder.mkdir()
        private.mkdir()
        snapshot(self._workdir, folder)
        torch.save(dict(inputs), private / "inputs.pt")
        (private / "judge.py").write_text(source, encoding="utf-8")
        return folder, private, log


def _result(private: Path, log: Path) -> Any:
    """What the judge wrote, read as data only; StudentError when it wrote nothing usable."""
    result_path = private / "result.pt"
    if not result_path.is_file():
        raise StudentError(f"judging the files failed: {clip(log_tail(log), QUOTE_CHARS)}")
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


def _wait(zygote: Channel, pid: int, timeout: float) -> None:
    """Wait for the judge ``pid`` to exit; past ``timeout`` s, kill it (StudentError)."""
    deadline = time.monotonic() + timeout
    pause = 0.005
    while zygote.ask({"op": "poll", "pid": pid})["exit"] is None:
        if time.monotonic() > deadline:
            zygote.ask({"op": "kill", "pid": pid})
            raise StudentError(f"judging the files took longer than {timeout:g} s")
        time.sleep(pause)
        pause = min(0.05, pause * 2)
