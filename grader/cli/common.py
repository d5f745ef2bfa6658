"""What every ``grader`` command shares: the consoles, the common options, the usage error."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

DEFAULT_GRADEBOOK = Path("grades/gradebook.sqlite")

course_option = click.option(
    "--course", "course_path", type=click.Path(path_type=Path), default=Path("course.toml"),
    show_default=True, envvar="GRADER_COURSE", help="The course settings file.")
gradebook_option = click.option(
    "--gradebook", type=click.Path(path_type=Path), default=DEFAULT_GRADEBOOK, show_default=True,
    help="The SQLite gradebook (created if missing).")

err = Console(stderr=True, highlight=False)
# rich falls back to 80 columns when not on a terminal: a summary piped to a log or a file would
# have its columns cut ("cell_ti…"); there it is as wide as it needs
out = Console(highlight=False, width=None if sys.stdout.isatty() else 400)


class UsageFailure(click.ClickException):
    exit_code = 2
