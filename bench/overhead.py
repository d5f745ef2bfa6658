"""Per homework: what grading the reference notebook costs over executing it bare.

"graded" is ``grader.pipeline.run.grade_notebook`` (what ``grader check`` and one submission of
``grader grade`` do): a private copy of the notebook's folder, a kernel forked from the warm
fork server (started once before the timing, as a grading run starts it once), the
notebook, the bridge, the hidden checks collected and run. "bare" is nbclient executing the
same notebook in a fresh stock ``python3`` kernel, in a copy of the same folder, nothing else.
Both run in turn, ``repeats`` times; medians are reported.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.bare import THREAD_ENV, execute_bare


class HomeworkFailed(RuntimeError):
    """The reference notebook did not grade clean (a grader or homework problem)."""


@dataclass(frozen=True)
class Timing:
    """Median seconds over ``repeats`` runs of one homework's reference notebook: executing
    it bare; grading it, and of that the notebook's execution (kernel start included) and the
    check stage (bridge and checks); the 1-minute load average before and after."""

    assignment: str
    repeats: int
    bare_s: float
    graded_s: float
    execution_s: float
    checks_s: float
    load_start: float
    load_end: float

    @property
    def ratio(self) -> float:
        """Graded over bare wall time (1.10 = grading costs 10 % more)."""
        return self.graded_s / self.bare_s

    @property
    def rest_s(self) -> float:
        """Graded time outside execution and checks: collecting the checks (twice: once to
        validate, once to serve), the workspace, the kernel's shutdown."""
        return self.graded_s - self.execution_s - self.checks_s


def _bare_in_copy(notebook: Path) -> float:
    # the grader runs a private copy of the notebook's folder; so does the bare run (a homework
    # writes files), and the copy is not timed
    with tempfile.TemporaryDirectory(prefix="bench-bare-") as tmp:
        for item in notebook.parent.iterdir():
            if item.is_file() and not item.is_symlink():
                shutil.copyfile(item, Path(tmp) / item.name)
        return execute_bare(Path(tmp) / notebook.name)


def start_fork_server(course_path: Path) -> tuple[float, str]:
    """Start this process's kernel fork server for the course's limits; return the seconds it
    took and the sandbox sentence."""
    from grader.course.config import load_course
    from grader.kernel.sandbox import use_sandbox
    from grader.kernel.zygote import channel_for

    sandboxed, note = use_sandbox(load_course(course_path).limits)
    start = time.perf_counter()
    channel_for(sandboxed)
    return time.perf_counter() - start, note


def measure(course_path: Path, assignment: str, repeats: int, seed: int = 0) -> Timing:
    """Time homework ``assignment`` of the course at ``course_path`` (see the module)."""
    import torch

    from grader.course.config import load_course
    from grader.pipeline.grading import grade_notebook

    os.environ.update(THREAD_ENV)  # the bare kernels inherit this environment
    torch.set_num_threads(1)
    course = load_course(course_path)
    notebook = course.reference_notebook(assignment)
    load_start = os.getloadavg()[0]
    bare, graded, execution, checks = [], [], [], []
    for i in range(repeats):
        bare.append(_bare_in_copy(notebook))
        start = time.perf_counter()
        run, check_run = grade_notebook(notebook, course.hidden_checks(assignment),
                                        course.limits, seed + i)
        graded.append(time.perf_counter() - start)
        results = check_run.results
        lost = [f"{r.name}: {r.message}" for r in results if r.earned != r.points]
        if run.status.value != "ok" or lost:
            raise HomeworkFailed(f"{assignment}: the reference did not grade clean on seed "
                                 f"{seed + i}: {run.status.value}: {run.detail}; "
                                 + "; ".join(lost)[:600])
        execution.append(run.seconds)
        checks.append(check_run.seconds)
    median = statistics.median
    return Timing(assignment, repeats, median(bare), median(graded), median(execution),
                  median(checks), load_start, os.getloadavg()[0])
