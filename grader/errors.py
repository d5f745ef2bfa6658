"""The grader's own error type: a problem with the course, its files or the command line.

Every error the library raises for the instructor (not for a student's notebook, which always
ends as a status) is a ``GraderError`` carrying the exit code the CLI ends with, so the CLI
catches one type and never lists the library's errors one by one.
"""

from __future__ import annotations


class GraderError(Exception):
    """A problem the person running the grader must fix; ``exit_code`` is what the CLI returns."""

    exit_code = 2


class ConfigError(GraderError):
    """course.toml (or a file it names) is missing or wrong; the message names file and key."""


class ChecksConfigError(GraderError):
    """The checks themselves are broken (no points marker, import error): stop the run."""


class GradebookError(GraderError):
    """The gradebook cannot be used: locked by another run, or not a gradebook."""


class SubmissionsError(GraderError):
    """The submissions folder is missing, or a manifest CSV cannot be read; the message names
    the file (and the line)."""


class SandboxUnavailable(GraderError):
    """The course requires the kernel sandbox and it cannot be created on this machine."""


class ReleaseError(GraderError):
    """A reference notebook cannot be turned into a student release (unbalanced markers)."""
