"""A bare nbclient execution: the notebook in a stock ``python3`` kernel, nothing else.

``python -m bench.bare NOTEBOOK...`` executes each notebook in turn where it lies (the bare
loop of the throughput benchmark) and exits 1 at the first cell that raises.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

# What the grader's kernels get too (grader.kernel.session.base_env): one thread, no display.
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "MPLBACKEND": "Agg"}


def execute_bare(notebook: Path, workdir: Path | None = None, timeout_s: float = 600) -> float:
    """Execute ``notebook`` in a fresh ``python3`` kernel started in ``workdir`` (default: the
    notebook's folder); return the wall-clock seconds, kernel start and shutdown included.
    Raise nbclient's CellExecutionError if a cell raises."""
    nb = nbformat.read(notebook, as_version=4)
    start = time.perf_counter()
    # the kernel's own chatter (ipykernel warns about TCP) is not the benchmark's output
    NotebookClient(nb, timeout=int(timeout_s), kernel_name="python3",
                   resources={"metadata": {"path": str(workdir or notebook.parent)}}
                   ).execute(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    for name in argv:
        try:
            execute_bare(Path(name))
        except CellExecutionError as exc:
            print(f"{name}: a cell raised: {str(exc)[:500]}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
