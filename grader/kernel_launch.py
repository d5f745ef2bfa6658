"""Start the kernel command under resource limits (the kernelspec's argv runs this module).

    python -m grader.kernel_launch --memory-mb 4096 --cpu-s 600 --fsize-mb 256 --nproc 256 \
        --nproc-uid 65534 -- COMMAND...

The limits are set with ``setrlimit`` in this process, which then becomes COMMAND (the kernel,
or bubblewrap around it) with ``os.execvp``, so everything the kernel starts inherits them. A
limit of 0 leaves that resource as it is. ``--nproc`` counts tasks (processes and threads) on
top of those the user ``--nproc-uid`` already runs, since the kernel counts them per user.
"""

from __future__ import annotations

import argparse
import os
import resource
from pathlib import Path


def _set(limit: int, value: int) -> None:
    if value <= 0:
        return
    _soft, hard = resource.getrlimit(limit)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(limit, (value, value))


def tasks_of(uid: int) -> int:
    """How many tasks (threads included) the user ``uid`` runs now."""
    count = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines()
                          if ":" in line)
        except OSError:
            continue
        if int(fields.get("Uid", "-1").split()[0]) == uid:
            count += int(fields.get("Threads", "1").strip())
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="grader.kernel_launch")
    parser.add_argument("--memory-mb", type=int, default=0)
    parser.add_argument("--cpu-s", type=int, default=0)
    parser.add_argument("--fsize-mb", type=int, default=0)
    parser.add_argument("--nproc", type=int, default=0)
    parser.add_argument("--nproc-uid", type=int, default=os.getuid())
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to run after --")

    _set(resource.RLIMIT_AS, args.memory_mb * 2**20)
    _set(resource.RLIMIT_CPU, args.cpu_s)
    _set(resource.RLIMIT_FSIZE, args.fsize_mb * 2**20)
    if args.nproc > 0:
        _set(resource.RLIMIT_NPROC, args.nproc + tasks_of(args.nproc_uid))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crashing kernel writes no core file
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
