"""Every exception the grader defines, in one place.

- ``GraderError`` and its kinds: a problem the person running the grader must fix (the course,
  its files, the command line). Each carries the exit code the CLI ends with, so the CLI
  catches one type and never lists the library's errors one by one.
- ``StudentError`` and its kinds: what a student's code or kernel did (it raised, timed out,
  sent something that is not data, died). An ``AssertionError``: a check that meets one fails.
- Grader-side faults that are not the course's (``ProtocolError``, ``GraderBug``,
  ``ZygoteError``): reported as grader errors, never charged to a student.
- ``MalformedNotebook``: a file that is not a notebook the grader can run (the row's
  ``malformed`` status, never an exception out of the grader).
"""

from __future__ import annotations

from collections.abc import Sequence


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


class BundleError(GraderError):
    """The bundle cannot be built as asked (unknown homework, no checks, existing output)."""


class KitError(GraderError):
    """The kit cannot be built as asked; the message names the file or the homework."""


class LeakError(KitError):
    """The kit would contain a secret; nothing was written (the command exits 1)."""

    exit_code = 1

    def __init__(self, leaks: Sequence[object]) -> None:  # grader.tools.leaks.Leak
        self.leaks = tuple(leaks)
        shown = "\n".join(f"  {leak}" for leak in self.leaks[:20])
        more = f"\n  ... and {len(self.leaks) - 20} more" if len(self.leaks) > 20 else ""
        super().__init__(f"the kit would contain {len(self.leaks)} secret(s); nothing was "
                         f"written:\n{shown}{more}")


class ClusterError(GraderError):
    """The cluster cannot grade: no dask.distributed, no scheduler at the address, no worker,
    or a worker that cannot see the course or runs another engine; the message says which."""


class HarnessError(GraderError):
    """A notebook could not be run far enough to call into its kernel."""


class LmsError(GraderError):
    """An LMS's download, worksheet or answer that the grader does not understand, or a course
    that lacks what the LMS needs (a roster, an assignment id). Every problem is listed, each
    naming its file, member or row; nothing is stored from it."""

    def __init__(self, what: str, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        shown = "\n".join(f"  {p}" for p in self.problems[:50])
        more = f"\n  ... and {len(self.problems) - 50} more" if len(self.problems) > 50 else ""
        super().__init__(f"{what}: {len(self.problems)} problem(s); nothing was written:\n"
                         f"{shown}{more}")


class AuditConfigError(GraderError):
    """The audit cannot start: a bad equivalents file, an unknown mutant id or homework, broken
    checks. The message names the file and the problem."""


class MarkingError(GraderError):
    """A mark, a marks file or a rubric change cannot be taken as given (an unknown student,
    question or rubric item, points out of range, a file changed since it was exported); the
    message names the row or the key, and nothing was stored."""


class StaleMark(MarkingError):
    """A save based on an out-of-date version of a mark: someone saved it in between. Nothing
    was stored; ``current`` is the mark as it now stands (a ``grader.records.Mark``)."""

    exit_code = 1

    def __init__(self, message: str, current: object) -> None:
        super().__init__(message)
        self.current = current


# -- what a submission did --------------------------------------------------------------------


class StudentError(AssertionError):
    """The student's code raised, timed out, or sent something that is not valid data; or the
    student's kernel died or stopped answering. An AssertionError, so that pytest reports it as
    a failed check with this message."""


class StudentRaised(StudentError):
    """The student's code raised: ``function`` (the one the check called, or the notebook's
    function the exception came from), the exception's class name ``ename`` and its
    ``message``; the text says all of it, with the call."""

    def __init__(self, text: str, function: str, ename: str, message: str) -> None:
        super().__init__(text)
        self.function, self.ename, self.message = function, ename, message


class ChecksTimeout(StudentError):
    """The check stage of this submission ran past its time limit."""


class MalformedNotebook(ValueError):
    """The file is not a notebook the grader can run; the message says why, for the student."""


# -- the grader's own faults, not the course's -------------------------------------------------


class ProtocolError(RuntimeError):
    """A grader-side mistake: a check sent a spec that does not build, or a value that cannot
    be sent. Reported as a grader error, never charged to the student."""


class GraderBug(RuntimeError):
    """Two of the grader's own computations disagree: the check is wrong, not the student.
    The check ends as an error for the instructor, and the student loses nothing for it."""


class ZygoteError(RuntimeError):
    """The fork server failed (a grader problem, never a student's)."""


class MutateError(Exception):
    """A notebook's solution markers are unbalanced."""
