"""The ``grader`` command line: ``main`` (the group, and ``grader check`` for students),
``instructor`` (the instructor's commands, loaded when asked for), ``common`` (options and
consoles both share)."""

from grader.cli.main import main

__all__ = ["main"]
