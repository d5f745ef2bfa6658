"""The sandbox itself (grader/kernel/sandbox.py): what a sandboxed process may do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from grader.kernel import sandbox

FOUND = sandbox.probe()


@pytest.mark.skipif(not FOUND.available and not os.environ.get("CI"), reason=FOUND.reason)
def test_the_sandboxed_user_can_make_a_temporary_file():
    # the zygote imports torch inside the sandbox as an unprivileged user; torch imports dill
    # when it is installed, and dill asks for a temporary folder at import
    command = sandbox.wrap([sys.executable, "-c", "import tempfile; print(tempfile.mkstemp())"],
                           read_write=[], read_only=[], env={"PATH": "/usr/bin:/bin"},
                           cwd=Path("/"))
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
