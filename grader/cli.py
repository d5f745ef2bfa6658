"""The ``grader`` command: a thin layer over the library.

Exit codes: 0 success; 1 a check failed (``check``) or a grading run hit a grader error
(``grade``); 2 a usage or configuration error (bad course.toml, unreadable input, checks
without points, a gradebook in use).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from grader import export as export_mod
from grader.config import Course, load_course
from grader.errors import ConfigError, GraderError
from grader.kit import choose, write_kit
from grader.notebook import MalformedNotebook, read_notebook
from grader.pipeline import Graded, Progress, grade_all, grade_notebook, new_seed
from grader.records import GradeRow, Outcome, Status, Submission
from grader.release import assignment_of, release_notebooks
from grader.sandbox import use_sandbox
from grader.store import locked, open_gradebook

DEFAULT_GRADEBOOK = Path("grades/gradebook.sqlite")
DEFAULT_CSV = Path("grades/gradebook.csv")
DEFAULT_LONG_CSV = Path("grades/gradebook_long.csv")
DEFAULT_FEEDBACK = Path("grades/feedback")
DEFAULT_REPORT = Path("grades/report.html")

course_option = click.option(
    "--course", "course_path", type=click.Path(path_type=Path), default=Path("course.toml"),
    show_default=True, envvar="GRADER_COURSE", help="The course settings file.")
gradebook_option = click.option(
    "--gradebook", type=click.Path(path_type=Path), default=DEFAULT_GRADEBOOK, show_default=True,
    help="The SQLite gradebook (created if missing).")

err = Console(stderr=True, highlight=False)
# rich falls back to 80 columns when not on a terminal; a summary piped to a log stays readable
out = Console(highlight=False, width=None if sys.stdout.isatty() else 140)


class UsageFailure(click.ClickException):
    exit_code = 2


class _Group(click.Group):
    # every command: the library's own errors become a clean message and their exit code
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except GraderError as exc:
            err.print(f"Error: {exc}", markup=False)
            ctx.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Autograder for the course "Neural Networks Speed-up and Compression"."""


@main.command()
@click.argument("submissions", type=click.Path(path_type=Path))
@course_option
@gradebook_option
@click.option("-a", "--assignment", "assignments", multiple=True,
              help="Grade only this assignment id (repeatable). Default: all.")
@click.option("--force", is_flag=True, help="Regrade submissions already in the gradebook.")
@click.option("--seed", type=int, default=None,
              help="Seed for the hidden checks' draws (default: a fresh one, recorded in the "
                   "gradebook; pass a recorded seed to reproduce a run).")
@click.option("-j", "--jobs", type=click.IntRange(1, 64), default=None,
              help="Notebooks graded at once, each in its own worker process (one CPU thread "
                   "each). Default: the number of cores.")
@click.option("--scheduler", metavar="ADDRESS", default=None,
              help="Grade on the Dask cluster whose scheduler is at ADDRESS "
                   "(tcp://host:8786), each submission a task on a worker; `local` starts "
                   "a cluster of --jobs worker processes here. See README, \"More than one "
                   "machine\".")
@click.option("--csv", "csv_path", type=click.Path(path_type=Path), default=DEFAULT_CSV,
              show_default=True, help="Where to write the gradebook CSV after the run.")
@click.option("--feedback", "feedback_dir", type=click.Path(path_type=Path),
              default=DEFAULT_FEEDBACK, show_default=True, help="Folder for per-student feedback.")
def grade(submissions: Path, course_path: Path, gradebook: Path, assignments: tuple[str, ...],
          force: bool, seed: int | None, jobs: int | None, scheduler: str | None,
          csv_path: Path, feedback_dir: Path) -> None:
    """Grade a folder of submissions (<root>/<student>/<assignment>/<notebook>.ipynb, with an
    optional timestamp.txt beside each notebook), or the submissions listed in a manifest CSV
    (columns student,assignment,path,submitted_at).

    Unchanged submissions keep their stored grade; the gradebook CSV and the feedback files are
    rewritten at the end.

    Example: grader grade examples/submissions --assignment hw1 --jobs 2

    On a Dask cluster: grader grade /shared/submissions --scheduler tcp://head:8786
    """
    course = load_course(course_path)
    with locked(gradebook) as book:
        graded = grade_all(course, submissions, book, assignments, force, seed,
                           _Printer(), jobs or _cores(), scheduler)
        rows = book.rows()
    export_mod.write_csv(export_mod.wide_table(course, rows), csv_path)
    export_mod.write_feedback(course, rows, feedback_dir)
    _write_html_feedback(course, rows, feedback_dir)
    _summary(graded)
    out.print(f"gradebook: {gradebook}   CSV: {csv_path}   feedback: {feedback_dir}/")
    if any(g.row.status is Status.GRADER_ERROR for g in graded):
        sys.exit(1)


class _Printer(Progress):
    """Progress on stderr: a line as each submission starts, one as it is stored, with the
    count, the rate and the time left."""

    def __init__(self) -> None:
        self.total = self.graded = 0
        self.start = time.monotonic()

    def note(self, text: str) -> None:
        err.print(text, markup=False)

    def planned(self, total: int) -> None:
        self.total, self.start = total, time.monotonic()

    def started(self, sub: Submission) -> None:
        err.print(f"[{self.graded + 1}/{self.total}] grading {sub.student}/{sub.assignment} ...",
                  markup=False)

    def finished(self, graded: Graded) -> None:
        row = graded.row
        if graded.skipped:
            err.print(f"  {row.student}/{row.assignment}: raw {row.raw:.2f} % (unchanged, kept)",
                      markup=False)
            return
        self.graded += 1
        rate = (time.monotonic() - self.start) / self.graded
        left = rate * (self.total - self.graded)
        err.print(f"  {row.student}/{row.assignment}: raw {row.raw:.2f} % ({row.status.value}, "
                  f"{row.seconds:.1f} s)   {self.graded}/{self.total} done, "
                  f"{rate:.1f} s per submission, about {_duration(left)} left", markup=False)


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _summary(graded: list[Graded]) -> None:
    table = Table(title="Grading summary")
    for column in ("student", "assignment", "status", "raw %", "cap %", "final %", "seconds"):
        table.add_column(column, no_wrap=True)
    table.add_column("detail", overflow="ellipsis", no_wrap=True, max_width=60)
    for g in graded:
        r = g.row
        table.add_row(r.student, r.assignment, export_mod.display_status(r).value, _pct(r.raw),
                      _pct(r.cap), _pct(r.final), f"{r.seconds:.1f}",
                      ("(kept) " if g.skipped else "") + r.detail[:90])
    out.print(table)


@main.command("export")
@course_option
@gradebook_option
@click.option("--csv", "csv_path", type=click.Path(path_type=Path), default=DEFAULT_CSV,
              show_default=True, help="One row per student.")
@click.option("--long", "long_path", type=click.Path(path_type=Path), default=DEFAULT_LONG_CSV,
              show_default=True, help="One row per student and assignment (LMS import).")
@click.option("--feedback", "feedback_dir", type=click.Path(path_type=Path),
              default=DEFAULT_FEEDBACK, show_default=True, help="Folder for per-student feedback.")
def export_cmd(course_path: Path, gradebook: Path, csv_path: Path, long_path: Path,
               feedback_dir: Path) -> None:
    """Write the gradebook CSVs and the feedback files from the gradebook.

    Example: grader export --csv grades/gradebook.csv --long grades/gradebook_long.csv
    """
    course = load_course(course_path)
    rows = _rows(gradebook)
    export_mod.write_csv(export_mod.wide_table(course, rows), csv_path)
    export_mod.write_csv(export_mod.long_table(course, rows), long_path)
    written = export_mod.write_feedback(course, rows, feedback_dir)
    _write_html_feedback(course, rows, feedback_dir)
    out.print(f"wrote {csv_path}, {long_path} and {len(written)} feedback file(s) (Markdown "
              f"and HTML) in {feedback_dir}/")


def _write_html_feedback(course: Course, rows: list[GradeRow], feedback_dir: Path) -> None:
    from grader import pages  # matplotlib and copydetect: not for `grader check`

    summaries = pages.check_summaries(course, {r.assignment for r in rows})
    pages.write_html_feedback(course, rows, feedback_dir, summaries)


def _rows(gradebook: Path) -> list[GradeRow]:
    if not gradebook.exists():
        raise UsageFailure(f"{gradebook}: no gradebook yet; run `grader grade` first")
    with open_gradebook(gradebook) as book:
        return book.rows()


@main.command("report")
@course_option
@gradebook_option
@click.option("--out", "out_path", type=click.Path(path_type=Path), default=DEFAULT_REPORT,
              show_default=True, help="The HTML page to write (one self-contained file).")
@click.option("--as-of", "as_of", default=None, metavar="WHEN",
              help="The time the pass table is made for, ISO 8601 (2026-12-09 or "
                   "2026-12-09T12:00; the course's time zone unless an offset is given). "
                   "Default: now.")
def report_cmd(course_path: Path, gradebook: Path, out_path: Path, as_of: str | None) -> None:
    """Write the instructor's report: per homework the score histograms, statuses, the checks
    most often failed, late submissions by tier, notebooks that did not run, grading time;
    the pass table; and pairs of submissions with similar code (flags, never a grade change).

    Example: grader report --out grades/report.html
    """
    from grader import pages  # matplotlib and copydetect: not for `grader check`

    course = load_course(course_path)
    now = dt.datetime.now(course.timezone)
    if as_of is not None:
        try:
            now = dt.datetime.fromisoformat(as_of)
        except ValueError:
            raise UsageFailure(f"--as-of: expected a date or time like 2026-12-09T12:00, "
                               f"got {as_of!r}") from None
        if now.tzinfo is None:
            now = now.replace(tzinfo=course.timezone)
    rows = _rows(gradebook)
    try:
        report = pages.write_report(course, rows, out_path, now)
    except OSError as exc:
        raise UsageFailure(f"{out_path}: cannot write the report: {exc.strerror or exc}") from None
    out.print(f"wrote {out_path}: {len(report.standings)} students, {report.trouble} notebook(s) "
              f"that did not run to the end, {report.flagged_pairs} similar pair(s)")


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
    course = load_course(course_path)
    try:
        nb = read_notebook(notebook)
    except MalformedNotebook as exc:
        raise UsageFailure(f"{notebook}: {exc}") from None
    try:
        assignment = assignment or assignment_of(course, notebook, nb)
        course.assignment(assignment)
    except ConfigError as exc:
        raise UsageFailure(f"{exc}; pass --assignment") from None
    check_dir = course.public_checks(assignment)
    _, sandbox_note = use_sandbox(course.limits)
    err.print(f"running {notebook} and the public checks of {assignment} ({sandbox_note})")
    execution, checks = grade_notebook(notebook, check_dir, course.limits,
                                       new_seed() if seed is None else seed)
    out.print(f"notebook: {execution.status.value} ({execution.detail}), "
              f"{execution.seconds:.1f} s")
    for error in execution.cell_errors:
        out.print(f"  {error}", markup=False)
    if checks.problem is not None:
        out.print(f"checks: {checks.problem.value} ({checks.detail})", markup=False)
    results = checks.results
    for r in results:
        mark = "[green]PASS[/]" if r.outcome is Outcome.PASSED else "[red]FAIL[/]"
        out.print(f"{mark} {r.name} ({r.points:g} pt)")
        if r.outcome is not Outcome.PASSED:
            for line in r.message.splitlines():
                out.print(f"     {line}", markup=False)
    passed = sum(r.outcome is Outcome.PASSED for r in results)
    out.print(f"{passed} passed, {len(results) - passed} failed")
    if passed != len(results):
        sys.exit(1)


@main.command("gradescope")
@click.argument("assignment", metavar="HW")
@click.argument("zip_path", metavar="OUT.zip", type=click.Path(path_type=Path))
@course_option
@click.option("--visibility", type=click.Choice(["hidden", "after_due_date", "after_published",
                                                 "visible"]),
              default="after_due_date", show_default=True,
              help="When students see each check's result on Gradescope. Shown at once, the "
                   "hidden checks answer every upload: a student could probe them.")
@click.option("--force", is_flag=True, help="Replace an existing OUT.zip.")
def gradescope_cmd(assignment: str, zip_path: Path, course_path: Path, visibility: str,
                   force: bool) -> None:
    """Write a Gradescope autograder for the homework HW to OUT.zip: setup.sh (installs
    bubblewrap, Python, torch==2.13.0 and the pinned dependencies), run_autograder (grades
    the submitted notebook with the hidden checks and the course's late rule, writes
    results.json), the engine, the course kit and the hidden checks.

    Example: grader gradescope hw1 out/hw1-gradescope.zip
    """
    from grader.gradescope import write_bundle

    course = load_course(course_path)
    bundle = write_bundle(course, assignment, zip_path, visibility, force)
    out.print(f"wrote {bundle.path}: the Gradescope autograder of {bundle.assignment} "
              f"({bundle.checks} check file(s), {bundle.files} files)")


@main.command("release-notebooks")
@course_option
@click.option("--check", "check_only", is_flag=True,
              help="Only report drift (exit 1 if a student notebook is out of date).")
def release_notebooks_cmd(course_path: Path, check_only: bool) -> None:
    """Generate the student notebooks in assignments/ from the reference notebooks.

    Example: grader release-notebooks --check
    """
    course = load_course(course_path)
    changed = release_notebooks(course, check_only)
    for path in changed:
        out.print(f"{'out of date' if check_only else 'wrote'}: {path}")
    if check_only and changed:
        sys.exit(1)
    if not changed:
        out.print("student notebooks are up to date")


@main.command("release")
@click.argument("folder", metavar="OUT", type=click.Path(path_type=Path))
@course_option
@click.option("-a", "--assignment", "assignments", multiple=True,
              help="Release this homework (repeatable). Default: every homework whose lecture "
                   "day has come, by the course's clock.")
@click.option("--all", "every", is_flag=True, help="Release every homework.")
@click.option("--as-of", "as_of", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="Release what is out by this day (YYYY-MM-DD). Default: today in the "
                   "course's time zone.")
@click.option("--zip", "archive", is_flag=True, help="Also write OUT.zip, one archive.")
@click.option("--force", is_flag=True, help="Replace an earlier kit at OUT (and OUT.zip).")
def release_cmd(folder: Path, course_path: Path, assignments: tuple[str, ...], every: bool,
                as_of: dt.datetime | None, archive: bool, force: bool) -> None:
    """Write the student kit to the folder OUT: the released notebooks, their public checks,
    the course kit nncourse, the engine that `make check` runs, a Makefile, a pyproject.toml
    and a README with the deadlines. No solution, hidden check, example or roster is in it:
    the kit is scanned for them before it is written (exit 1 if one is found).

    Example: grader release out/kit --all --zip
    """
    course = load_course(course_path)
    today = as_of.date() if as_of else dt.datetime.now(course.timezone).date()
    chosen, skipped = choose(course, assignments, every, today)
    for message in skipped:
        err.print(message)
    kit = write_kit(course, folder, chosen, archive, force)
    out.print(f"wrote the kit of {', '.join(kit.assignments)} to {kit.folder}/ "
              f"({kit.files} files)" + (f" and {kit.archive}" if kit.archive else ""))


__all__ = ["main"]
