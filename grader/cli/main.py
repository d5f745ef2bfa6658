"""The ``grader`` command: a thin layer over the library.

``grader check`` (what a student's ``make check`` runs) is defined here; the instructor's
commands live in ``grader.cli.instructor`` and are imported only when asked for, so a student's
check imports nothing it does not need (and the student kit ships without them).

Exit codes: 0 success; 1 a check failed (``check``), a grading run hit a grader error
(``grade``), an audit found a problem (``audit``) or a kit would leak a secret (``release``);
2 a usage or configuration error (bad course.toml, unreadable input, checks without points, a
gradebook in use).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

import click

from grader.cli.common import UsageFailure, course_option, err, out
from grader.course.config import load_course
from grader.course.notebook import assignment_of, read_notebook
from grader.errors import ConfigError, GraderError, MalformedNotebook
from grader.kernel import zygote
from grader.kernel.sandbox import use_sandbox
from grader.output.view import in_notebook_order
from grader.records import Outcome

# command name -> its function in grader.cli.instructor
INSTRUCTOR_COMMANDS = {"grade": "grade", "export": "export_cmd", "report": "report_cmd",
                       "audit": "audit_cmd", "release-notebooks": "release_notebooks_cmd",
                       "release": "release_cmd", "gradescope": "gradescope_cmd",
                       "mark": "mark_cmd", "marks": "marks_group",
                       "import": "import_cmd", "push": "push_cmd"}


class _Group(click.Group):
    """Commands defined here, and the instructor's, loaded when asked for (where installed);
    every command's own library errors become a clean message and their exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        instructor = INSTRUCTOR_COMMANDS if _has_instructor_commands() else {}
        return sorted({*super().list_commands(ctx), *instructor})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None and name in INSTRUCTOR_COMMANDS and _has_instructor_commands():
            module = importlib.import_module("grader.cli.instructor")
            found: click.Command = getattr(module, INSTRUCTOR_COMMANDS[name])
            return found
        return command

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except GraderError as exc:
            # not wrapped: a path in the message must stay whole, to copy or to grep for
            err.print(f"Error: {exc}", markup=False, soft_wrap=True)
            ctx.exit(exc.exit_code)


def _has_instructor_commands() -> bool:
    return importlib.util.find_spec("grader.cli.instructor") is not None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Autograder for the course "Neural Networks Speed-up and Compression"."""


@main.command()
@click.argument("notebook", type=click.Path(path_type=Path))
@course_option
@click.option("-a", "--assignment", default=None,
              help="Assignment id (default: the id in the notebook's metadata, else the "
                   "homework whose notebook has this file name, else the folder name).")
@click.option("--seed", type=int, default=None, help="Seed for any drawn inputs.")
def check(notebook: Path, course_path: Path, assignment: str | None, seed: int | None) -> None:
    """Run the public checks on your own notebook. Exit 0 if all pass, 1 if any fails.

    Example: grader check ~/Downloads/hw1.ipynb
    """
    course = load_course(_course_file(course_path, notebook))
    try:
        nb = read_notebook(notebook, course.limits.max_notebook_mb)
    except MalformedNotebook as exc:
        raise UsageFailure(f"{notebook}: {exc}") from None
    try:
        assignment = assignment or assignment_of(course, notebook, nb)
        course.assignment(assignment)
    except ConfigError as exc:
        raise UsageFailure(f"{exc}; pass --assignment") from None
    check_dir = course.public_checks(assignment)
    sandboxed, sandbox_note = use_sandbox(course.limits)
    no_fork_server = zygote.unsupported()
    if no_fork_server:
        from grader.kernel.plain import what_it_limits

        how = f"a plain Jupyter kernel ({no_fork_server}): {what_it_limits()}, no sandbox"
    else:
        zygote.start(sandboxed)  # the kernels' imports run while this process imports its own
        how = sandbox_note
    err.print(f"running {notebook} and the public checks of {assignment} ({how})",
              markup=False)
    from grader.pipeline.grading import grade_notebook, new_seed

    execution, checks = grade_notebook(notebook, check_dir, course.limits,
                                       new_seed() if seed is None else seed)
    out.print(f"notebook: {execution.status.value} ({execution.detail}), "
              f"{execution.seconds:.1f} s")
    for error in execution.cell_errors:
        out.print(f"  {error}", markup=False)
    if checks.problem is not None:
        out.print(f"checks: {checks.problem.value} ({checks.detail})", markup=False)
    results = in_notebook_order(checks.results, course, assignment)
    for r in results:
        whole = r.outcome is Outcome.PASSED and r.earned >= r.points
        mark = "[green]PASS[/]" if whole else \
            "[yellow]PART[/]" if r.outcome is Outcome.PASSED else "[red]FAIL[/]"
        out.print(f"{mark} ", end="")
        share = "" if whole or r.outcome is not Outcome.PASSED else f"{r.earned:g} of "
        out.print(f"{r.task + ': ' if r.task else ''}{r.title or r.name} "
                  f"({share}{r.points:g} pt)", markup=False)
        if not whole:
            for line in r.message.splitlines():
                out.print(f"     {line}", markup=False)
    passed = sum(r.outcome is Outcome.PASSED and r.earned >= r.points for r in results)
    partial = sum(r.outcome is Outcome.PASSED for r in results) - passed
    out.print(f"{passed} passed, " + (f"{partial} with part of their points, " if partial else "")
              + f"{len(results) - passed - partial} failed")
    _written_questions(nb)
    if passed != len(results):
        sys.exit(1)


def _written_questions(nb: Any) -> None:
    """What the saved notebook answers of its written questions: people mark them after the
    deadline, so only whether each is answered (and its figure saved) can be said here."""
    from grader.course.questions import answers_in

    asked = answers_in(nb)
    if not asked:
        return
    out.print(f"written questions ({len(asked)}), marked by people after the deadline, not by "
              f"these checks; as {'they stand' if len(asked) > 1 else 'it stands'} in the "
              f"saved file:", markup=False, soft_wrap=True)
    for qid, points, answer in asked:
        state = "not answered yet" if answer.missing else \
            f"answered ({len(answer.text.split())} words)"
        flag = answer.flag.removeprefix("no answer: ")
        if flag and not answer.missing:
            flag += ": run that cell and save the notebook before you hand it in"
        out.print(f"  {qid} ({points:g} pt): {state}{'; ' + flag if flag else ''}",
                  markup=False, soft_wrap=True)


def _course_file(given: Path, notebook: Path) -> Path:
    """The course file: ``given`` when it exists or was named; else the first course.toml in
    the notebook's folder or above it, else the one of the kit this engine came with (so
    ``make check`` and ``grader check`` work from any folder)."""
    if given.exists() or given != Path("course.toml"):
        return given
    for folder in (notebook.resolve().parent, *notebook.resolve().parents,
                   Path(__file__).resolve().parents[2]):
        if (folder / "course.toml").is_file():
            return folder / "course.toml"
    raise UsageFailure(f"no course.toml in {Path.cwd()} or above {notebook}: run this from "
                       f"the kit's folder, or pass --course PATH/TO/course.toml")


__all__ = ["main"]
