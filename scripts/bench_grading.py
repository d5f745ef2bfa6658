"""Time grading the homework-1 reference notebook against a bare nbclient run of it.

Both are measured in the same run, alternating, so the ratio is meaningful on a noisy machine:

    python scripts/bench_grading.py [--repeats 3] [--assignment hw1]

"bare" is nbclient executing the notebook in a stock python3 kernel, nothing else; "graded" is
the grader's whole path for one submission: a private copy, the limited kernel, the notebook,
the bridge, and every hidden check.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from grader.config import load_course
from grader.grading import grade_notebook

ROOT = Path(__file__).resolve().parents[1]


def bare(notebook: Path) -> float:
    nb = nbformat.read(notebook, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(notebook.parent)}}).execute()
    return time.perf_counter() - start


def graded(notebook: Path, assignment: str) -> tuple[float, float]:
    course = load_course(ROOT / "course.toml")
    start = time.perf_counter()
    execution, checks = grade_notebook(notebook, course.hidden_checks(assignment),
                                       course.limits, seed=0)
    results = checks.results
    seconds = time.perf_counter() - start
    earned = sum(r.earned for r in results)
    possible = sum(r.points for r in results)
    if execution.status.value != "ok" or earned != possible:
        raise SystemExit(f"the reference did not grade clean: {execution}, {earned}/{possible}")
    return seconds, execution.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--assignment", default="hw1")
    args = parser.parse_args()
    course = load_course(ROOT / "course.toml")
    notebook = course.reference_notebook(args.assignment)
    bare_s, graded_s, exec_s = [], [], []
    for i in range(args.repeats):
        bare_s.append(bare(notebook))
        total, executing = graded(notebook, args.assignment)
        graded_s.append(total)
        exec_s.append(executing)
        print(f"run {i + 1}: bare nbclient {bare_s[-1]:.2f} s, graded {total:.2f} s "
              f"(of which notebook execution {executing:.2f} s)")
    b, g, e = (statistics.median(v) for v in (bare_s, graded_s, exec_s))
    print(f"median over {args.repeats}: bare nbclient {b:.2f} s; graded {g:.2f} s "
          f"(execution {e:.2f} s, checks and set-up {g - e:.2f} s); graded / bare = {g / b:.2f}")


if __name__ == "__main__":
    main()
