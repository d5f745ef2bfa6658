"""A reference notebook's live kernel, for ``grader audit`` and the homework tests.

Running a notebook takes seconds to a minute; running its checks again on another seed, or
against a slightly different definition of one function, takes far less. So the notebook runs
once (``live_kernel``), and what differs is sent to that kernel: edited cells are re-run in it
(``redefined``) and the reference's cells are re-run afterwards to put it back, which is what the
kernel of a notebook holding the edited cells looks like when the checks call into it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nbformat

from grader.course.notebook import BEGIN
from grader.errors import HarnessError
from grader.kernel.judge import Judge
from grader.kernel.protocol import Student
from grader.kernel.session import KernelSession
from grader.pipeline.checking import run_checks
from grader.pipeline.execute import execute
from grader.records import CheckResult, Execution, Limits

SETUP_TIMEOUT_S = 30.0  # installing the bridge, re-running a cell that only defines functions


@dataclass(frozen=True)
class Live:
    """A kernel that ran a notebook, with the bridge installed: its execution record, the session
    (to send code) and the ``Student`` the checks call through (with a judge over its folder)."""

    execution: Execution
    session: KernelSession
    student: Student


def score(results: Sequence[CheckResult]) -> tuple[float, float]:
    """(points earned, points possible) of a run of checks."""
    return sum(r.earned for r in results), sum(r.points for r in results)


@contextmanager
def live_kernel(notebook: Path, limits: Limits) -> Iterator[Live]:
    """Run ``notebook`` in a fresh sandboxed kernel (``grader.pipeline.execute.execute``) and
    keep it alive with the bridge installed; raise HarnessError when no check could call into it."""
    with execute(notebook, limits) as (execution, session):
        if session is None:
            raise HarnessError(f"{notebook}: {execution.status.value}: {execution.detail}")
        session.install_bridge(SETUP_TIMEOUT_S)
        yield Live(execution, session, Student(session.request, limits.call_timeout_s,
                                               Judge(session.workdir, limits),
                                               memory_mb=limits.memory_mb))


def checks_on(notebook: Path, limits: Limits, seed: int, *check_dirs: Path
              ) -> tuple[Execution, list[tuple[CheckResult, ...]]]:
    """Run ``notebook`` once and each folder of ``check_dirs`` against its kernel (e.g. the
    public and the hidden checks of one version); the results in the folders' order."""
    with live_kernel(notebook, limits) as live:
        return live.execution, [run_checks(folder, live.student, seed) for folder in check_dirs]


@contextmanager
def redefined(session: KernelSession, original: Sequence[str], cells: Sequence[str]
              ) -> Iterator[None]:
    """Run in the live kernel the cells of ``cells`` that differ from ``original`` (the code
    cells the kernel ran), and any cells beyond them; on exit put the original back.

    Putting back re-runs the original of each changed cell; when extra cells ran, it also
    re-runs every original cell that holds a solution region, since an extra cell may redefine
    any graded function. (Those cells must be cheap to re-run: definitions, not training.)
    """
    changed = [i for i, (a, b) in enumerate(zip(original, cells, strict=False)) if a != b]
    extra = list(cells[len(original):])
    try:
        for source in [cells[i] for i in changed] + extra:
            session.send_source(source, SETUP_TIMEOUT_S)
        yield
    finally:
        restore = set(changed)
        if extra:
            restore |= {i for i, source in enumerate(original) if BEGIN in source}
        for i in sorted(restore):
            session.send_source(original[i], SETUP_TIMEOUT_S)


def replaced(cells: Sequence[str], replacements: Sequence[tuple[str, str]], label: str,
             appended: str | None = None) -> list[str]:
    """``cells`` with each ``(old, new)`` text replacement made (each ``old`` must occur
    exactly once in all the cells together), then ``appended`` added as a last cell."""
    result = list(cells)
    for old, new in replacements:
        count = sum(cell.count(old) for cell in result)
        if count != 1:
            raise ValueError(f"{label}: {old!r} occurs {count} times, not once")
        hit = next(i for i, cell in enumerate(result) if old in cell)
        result[hit] = result[hit].replace(old, new)
    if appended is not None:
        result.append(appended)
    return result


def write_variant(reference: Path, dest: Path, sources: dict[int, str] | None = None,
                  appended: str | None = None) -> Path:
    """A copy of the notebook ``reference`` at ``dest``, with cell ``i``'s source replaced by
    ``sources[i]`` and ``appended`` added as a last code cell; outputs dropped."""
    nb = nbformat.read(reference, as_version=4)
    for index, source in (sources or {}).items():
        nb.cells[index].source = source
    if appended is not None:
        nb.cells.append(nbformat.v4.new_code_cell(appended))
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dest)
    return dest
