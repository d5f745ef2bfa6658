"""``python -m grader``: the ``grader`` command (where no script is on the PATH, on Windows)."""

from grader.cli import main

main()
