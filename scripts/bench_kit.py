"""Time `make check HW=...` in an installed student kit against a bare run of the same notebook.

    python scripts/bench_kit.py KIT [--assignment hw1] [--repeats 3]

KIT is a folder written by `grader release` and set up with `make install`; copy the notebook
to check into it first (the reference, so that every check runs to the end). "bare" is
`jupyter execute` of that notebook with the kit's Python: a stock kernel, nothing else.
"make check" is what a student runs: the engine starts, the notebook runs in the limited
kernel, and the public checks call into it. Both are measured in the same run, alternating,
so that their difference means something on a noisy machine.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import time
from pathlib import Path


def timed(command: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-2000:]}"
                         f"\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kit", type=Path)
    parser.add_argument("--assignment", default="hw1")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    notebook = next((args.kit / "assignments" / args.assignment).glob("*.ipynb"))
    bare_s, check_s, inner_s = [], [], []
    for i in range(args.repeats):
        bare_s.append(timed([str(args.kit / ".venv" / "bin" / "jupyter-execute"),
                             str(notebook)], args.kit)[0])
        seconds, output = timed(["make", "check", f"HW={args.assignment}"], args.kit)
        check_s.append(seconds)
        reported = re.search(r"^notebook: \w+ .*, ([\d.]+) s$", output, re.M)
        inner_s.append(float(reported.group(1)) if reported else float("nan"))
        print(f"run {i + 1}: bare {bare_s[-1]:.2f} s, make check {check_s[-1]:.2f} s "
              f"(notebook inside it {inner_s[-1]:.2f} s)")
    b, c, n = (statistics.median(v) for v in (bare_s, check_s, inner_s))
    print(f"median over {args.repeats}: bare {b:.2f} s; make check {c:.2f} s (notebook {n:.2f} s); "
          f"make check - bare = {c - b:.2f} s")


if __name__ == "__main__":
    main()
