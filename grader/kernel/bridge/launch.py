"""A kernel or a judge started as a plain process, where there is no fork server (macOS,
Windows, or a Linux where it cannot start): ``python -m _grader_bridge.launch LIMITS kernel
ARGS...`` runs ipykernel with ARGS, ``... LIMITS judge PRIVATE NAME ARTIFACTS`` a judge, each
under the resource limits the platform has (LIMITS: JSON of ``memory_mb``, ``cpu_s``,
``fsize_mb``; POSIX only, and macOS ignores the memory one). Portable: nothing Linux-only.
"""

from __future__ import annotations

import json
import runpy
import sys


def apply_limits(limits: dict[str, int]) -> str:
    """Set what the platform lets a process limit for itself; say what was set."""
    try:
        import resource
    except ImportError:  # Windows
        return "no resource limits on this platform"
    applied = []
    for key, kind, scale in (("memory_mb", "RLIMIT_AS", 2**20), ("cpu_s", "RLIMIT_CPU", 1),
                             ("fsize_mb", "RLIMIT_FSIZE", 2**20)):
        value = int(limits.get(key, 0)) * scale
        which = getattr(resource, kind, None)
        if not value or which is None:
            continue
        try:
            _soft, hard = resource.getrlimit(which)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(which, (value, value))
            applied.append(key)
        except (ValueError, OSError):  # macOS refuses RLIMIT_AS below the current use
            continue
    return "limits: " + (", ".join(applied) or "none the platform allows")


def main(argv: list[str]) -> None:
    limits, what, *rest = argv
    apply_limits(json.loads(limits))
    if what == "judge":
        from .judging import judge

        private, name, artifacts = rest
        judge(private, name, artifacts)
        return
    sys.argv = ["ipykernel_launcher", *rest]
    runpy.run_module("ipykernel_launcher", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
