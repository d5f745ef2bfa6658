"""Run the grader as it runs where Linux's pieces are missing (macOS, Windows): ``python
tests/portable/run.py REPORT ARGS...`` is ``grader ARGS...`` (or, with ``grade-notebook
NOTEBOOK CHECKS LIMITS SEED``, one ``grade_notebook``) with ``os.fork`` gone and the
Linux-and-POSIX modules the fork server needs (``fcntl``, ``resource``) unimportable, so the
code takes its portable path for real, not by a flag. Every import the grader's own modules make
of a module macOS or Windows lacks is written to REPORT (JSON: module -> importers). The kernels
it starts are ordinary Pythons (on a laptop, the student's own)."""

from __future__ import annotations

import atexit
import importlib.abc
import json
import os
import sys
from pathlib import Path

BLOCKED = ("fcntl", "resource")
# modules of the standard library that Windows (or macOS) lacks
LACKING = BLOCKED + ("termios", "tty", "pty", "grp", "pwd", "spwd", "crypt", "nis", "syslog",
                     "posix", "_posixsubprocess", "_posixshmem", "ossaudiodev", "readline")
found: dict[str, list[str]] = {}


class _Watch(importlib.abc.MetaPathFinder):
    """Refuses the BLOCKED modules, and records which of the grader's modules asks for a
    LACKING one."""

    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in LACKING:
            frame = sys._getframe(1)
            while frame is not None and frame.f_globals.get("__name__", "").startswith(
                    ("importlib", "_frozen_importlib")):
                frame = frame.f_back
            importer = frame.f_globals.get("__name__", "?") if frame is not None else "?"
            if importer.startswith(("grader", "_grader_bridge")):
                found.setdefault(top, []).append(importer)
            if top in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (made unavailable)",
                                          name=name)
        return None


def make_unavailable() -> None:
    for name in BLOCKED:
        sys.modules.pop(name, None)
    sys.meta_path.insert(0, _Watch())
    for name in ("fork", "forkpty"):
        if hasattr(os, name):
            delattr(os, name)


def grade(notebook: str, checks: str, limits: str, seed: str, select: str = "null") -> None:
    """Print what ``grade_notebook`` gives (status, outcomes, points), as JSON; ``select``: a
    JSON list of the checks to run, or null for all."""
    from grader.pipeline.grading import grade_notebook
    from grader.records import Limits

    execution, run = grade_notebook(Path(notebook), Path(checks), Limits(**json.loads(limits)),
                                    int(seed), json.loads(select))
    print(json.dumps({"status": execution.status.value,
                      "checks": {r.name: [r.outcome.value, r.earned] for r in run.results}}))


if __name__ == "__main__":
    report = sys.argv[1]
    atexit.register(lambda: Path(report).write_text(json.dumps(found)))
    make_unavailable()
    if sys.argv[2] == "grade-notebook":  # tests/test_portable.py
        grade(*sys.argv[3:])
    else:
        from grader.cli import main

        sys.argv = ["grader", *sys.argv[2:]]
        main()
