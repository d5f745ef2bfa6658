"""Start an IPython kernel under resource limits (the kernelspec's argv runs this module).

    python -m grader.kernel_launch --memory-mb 4096 --cpu-s 600 --fsize-mb 256 --nproc 256 \
        -f {connection_file}

The limits are set with ``setrlimit`` in this process, then it becomes the kernel with
``os.execv``, so the kernel and everything it starts inherit them. A limit of 0 means "leave
as it is".
"""

from __future__ import annotations

import argparse
import os
import resource
import sys


def _set(limit: int, value: int) -> None:
    if value <= 0:
        return
    _soft, hard = resource.getrlimit(limit)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(limit, (value, value))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="grader.kernel_launch")
    parser.add_argument("--memory-mb", type=int, default=0)
    parser.add_argument("--cpu-s", type=int, default=0)
    parser.add_argument("--fsize-mb", type=int, default=0)
    parser.add_argument("--nproc", type=int, default=0)
    parser.add_argument("-f", dest="connection_file", required=True)
    args = parser.parse_args(argv)

    _set(resource.RLIMIT_AS, args.memory_mb * 1024 * 1024)
    _set(resource.RLIMIT_CPU, args.cpu_s)
    _set(resource.RLIMIT_FSIZE, args.fsize_mb * 1024 * 1024)
    _set(resource.RLIMIT_NPROC, args.nproc)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crashing kernel writes no core file
    os.execv(sys.executable,
             [sys.executable, "-m", "ipykernel_launcher", "-f", args.connection_file])


if __name__ == "__main__":
    main()
