"""The ``grader`` command: a thin layer over the library.

Exit codes: 0 success; 1 a check failed (``check``) or a grading run hit a grader error
(``grade``); 2 a usage or configuration error (bad course.toml, unreadable input, checks
without points, a gradebook in use).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from grader import audit as audit_mod
from grader import export as export_mod
from grader.check import ChecksConfigError, Outcome, run_checks
from grader.config import ConfigError, Course, load_course
from grader.discover import ManifestError, Submission
from grader.execute import ExecStatus, SandboxUnavailable, read_notebook, use_sandbox
from grader.pipeline import Graded, Progress, grade_all, grade_notebook, new_seed
from grader.release import ReleaseError, release_notebooks
from grader.store import GradebookError, locked, open_gradebook

DEFAULT_GRADEBOOK = Path("grades/gradebook.sqlite")
DEFAULT_CSV = Path("grades/gradebook.csv")
DEFAULT_LONG_CSV = Path("grades/gradebook_long.csv")
DEFAULT_FEEDBACK = Path("grades/feedback")

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


def _load(course_path: Path) -> Course:
    try:
        return load_course(course_path)
    except ConfigError as exc:
        raise UsageFailure(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
@click.option("-j", "--jobs", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Notebooks graded at once, each in its own process (one CPU thread each).")
@click.option("--csv", "csv_path", type=click.Path(path_type=Path), default=DEFAULT_CSV,
              show_default=True, help="Where to write the gradebook CSV after the run.")
@click.option("--feedback", "feedback_dir", type=click.Path(path_type=Path),
              default=DEFAULT_FEEDBACK, show_default=True, help="Folder for per-student feedback.")
def grade(submissions: Path, course_path: Path, gradebook: Path, assignments: tuple[str, ...],
          force: bool, seed: int | None, jobs: int, csv_path: Path, feedback_dir: Path) -> None:
    """Grade a folder of submissions (<root>/<student>/<assignment>/<notebook>.ipynb, with an
    optional timestamp.txt beside each notebook), or the submissions listed in a manifest CSV
    (columns student,assignment,path,submitted_at).

    Unchanged submissions keep their stored grade; the gradebook CSV and the feedback files are
    rewritten at the end.

    Example: grader grade examples/submissions --assignment hw1 --jobs 2
    """
    course = _load(course_path)
    try:
        with locked(gradebook) as book:
            graded = grade_all(course, submissions, book, assignments, force, seed,
                               _progress_printer(), jobs)
            rows = book.rows()
    except (ConfigError, ChecksConfigError, GradebookError, FileNotFoundError,
            SandboxUnavailable, ManifestError) as exc:
        raise UsageFailure(str(exc)) from None
    export_mod.write_csv(export_mod.wide_table(course, rows), csv_path)
    export_mod.write_feedback(course, rows, feedback_dir)
    _summary(graded)
    out.print(f"gradebook: {gradebook}   CSV: {csv_path}   feedback: {feedback_dir}/")
    if any(g.row.status == ExecStatus.GRADER_ERROR.value for g in graded):
        sys.exit(1)


def _progress_printer() -> Progress:
    """Progress lines on stderr: one as each submission starts, one when it is stored."""
    done = 0

    def report(event: str, sub: Submission | None, graded: Graded | None) -> None:
        nonlocal done
        if sub is None:
            err.print(event)
        elif event == "grading":
            err.print(f"[{done + 1}] grading {sub.student}/{sub.assignment} ...")
        elif graded is not None:
            done += 1
            row = graded.row
            what = "unchanged, kept" if graded.skipped else f"{row.status}, {row.seconds:.1f} s"
            err.print(f"  {sub.student}/{sub.assignment}: raw {row.raw:.2f} % ({what})")

    return report


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _summary(graded: list[Graded]) -> None:
    table = Table(title="Grading summary")
    for column in ("student", "assignment", "status", "raw %", "cap %", "final %", "seconds"):
        table.add_column(column, no_wrap=True)
    table.add_column("detail", overflow="ellipsis", no_wrap=True, max_width=60)
    for g in graded:
        r = g.row
        table.add_row(r.student, r.assignment, export_mod.display_status(r), _pct(r.raw),
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
    course = _load(course_path)
    if not gradebook.exists():
        raise UsageFailure(f"{gradebook}: no gradebook yet; run `grader grade` first")
    try:
        with open_gradebook(gradebook) as book:
            rows = book.rows()
    except GradebookError as exc:
        raise UsageFailure(str(exc)) from None
    export_mod.write_csv(export_mod.wide_table(course, rows), csv_path)
    export_mod.write_csv(export_mod.long_table(course, rows), long_path)
    written = export_mod.write_feedback(course, rows, feedback_dir)
    out.print(f"wrote {csv_path}, {long_path} and {len(written)} feedback file(s) in "
              f"{feedback_dir}/")


@main.command()
@click.argument("notebook", type=click.Path(path_type=Path))
@course_option
@click.option("-a", "--assignment", default=None,
              help="Assignment id (default: the notebook's folder name, e.g. hw1).")
@click.option("--seed", type=int, default=None, help="Seed for any drawn inputs.")
def check(notebook: Path, course_path: Path, assignment: str | None, seed: int | None) -> None:
    """Run the public checks on your own notebook. Exit 0 if all pass, 1 if any fails.

    Example: grader check assignments/hw1/hw1.ipynb
    """
    course = _load(course_path)
    assignment = assignment or notebook.resolve().parent.name
    try:
        course.assignment(assignment)
        read_notebook(notebook)
    except ConfigError as exc:
        raise UsageFailure(f"{exc}; pass --assignment") from None
    except ValueError as exc:
        raise UsageFailure(f"{notebook}: {exc}") from None
    check_dir = course.public_checks(assignment)
    try:
        _, sandbox_note = use_sandbox(course.limits)
        err.print(f"running {notebook} and the public checks of {assignment} ({sandbox_note})")
        execution, results = grade_notebook(notebook, check_dir, course.limits,
                                            new_seed() if seed is None else seed)
    except (ChecksConfigError, SandboxUnavailable) as exc:
        raise UsageFailure(str(exc)) from None
    out.print(f"notebook: {execution.status.value} ({execution.detail}), "
              f"{execution.seconds:.1f} s")
    for error in execution.cell_errors:
        out.print(f"  {error}")
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


@main.command("release-notebooks")
@course_option
@click.option("--check", "check_only", is_flag=True,
              help="Only report drift (exit 1 if a student notebook is out of date).")
def release_notebooks_cmd(course_path: Path, check_only: bool) -> None:
    """Generate the student notebooks in assignments/ from the reference notebooks.

    Example: grader release-notebooks --check
    """
    course = _load(course_path)
    try:
        changed = release_notebooks(course, check_only)
    except ReleaseError as exc:
        raise UsageFailure(str(exc)) from None
    for path in changed:
        out.print(f"{'out of date' if check_only else 'wrote'}: {path}")
    if check_only and changed:
        sys.exit(1)
    if not changed:
        out.print("student notebooks are up to date")


@main.command("audit")
@click.argument("assignments", nargs=-1)
@course_option
@click.option("--only", "parts", multiple=True, type=click.Choice(audit_mod.PARTS),
              help="Run only this part (repeatable). Default: all four.")
@click.option("--seed", type=int, default=None,
              help="First seed of the reference's runs, and the seed mutants are graded on "
                   "(default: a fresh one, printed).")
@click.option("--seeds", type=click.IntRange(0), default=None,
              help="Seeds of the fast checks on the reference (default: [audit] seeds).")
@click.option("--slow-seeds", type=click.IntRange(0), default=None,
              help="Of them, seeds on which every check runs, slow_check ones included "
                   "(default: [audit] slow_seeds).")
@click.option("--mutants", type=click.IntRange(0), default=None,
              help="Mutants drawn per homework (default: [audit] mutants).")
@click.option("--mutant-seed", type=int, default=None,
              help="Seed of the mutants' draw (default: [audit] mutant_seed).")
@click.option("--mutant", "mutant_ids", multiple=True,
              help="Grade this mutant (an id from --list-mutants; repeatable) instead of a draw.")
@click.option("--list-mutants", is_flag=True,
              help="List every mutant (id and change) of each homework and exit; runs nothing.")
@click.option("-j", "--jobs", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Mutants graded at once, each in its own process and kernel.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Write the full report (every loss, every mutant with its diff) here.")
def audit_cmd(assignments: tuple[str, ...], course_path: Path, parts: tuple[str, ...],
              seed: int | None, seeds: int | None, slow_seeds: int | None, mutants: int | None,
              mutant_seed: int | None, mutant_ids: tuple[str, ...], list_mutants: bool,
              jobs: int, json_path: Path | None) -> None:
    """Audit the hidden checks of homework(s): the reference must keep every point on many
    seeds, mutants of its solution regions must lose points, the untouched template must earn
    0, and the public answers returned as constants must fail. Exit 1 if any of that fails.

    Example: grader audit hw1 --seeds 200 --mutants 40 --mutant-seed 7 --jobs 2 --json a.json
    """
    course = _load(course_path)
    options = audit_mod.Options(parts=parts or audit_mod.PARTS, seed=seed, seeds=seeds,
                                slow_seeds=slow_seeds, mutants=mutants, mutant_seed=mutant_seed,
                                mutant_ids=mutant_ids, jobs=jobs)
    try:
        if list_mutants:
            for hw in assignments or [a.id for a in course.assignments]:
                for m in audit_mod.list_mutants(course, hw):
                    out.print(f"{hw} {m.id}  {m.summary}", markup=False, soft_wrap=True)
            return
        use_sandbox(course.limits)
        report = audit_mod.audit(course, assignments, options, lambda line: err.print(
            line, markup=False, soft_wrap=True))
    except (audit_mod.AuditConfigError, SandboxUnavailable) as exc:
        raise UsageFailure(str(exc)) from None
    _audit_summary(report)
    if json_path is not None:
        audit_mod.write_json(report, json_path)
        out.print(f"report: {json_path}")
    if not report.ok:
        sys.exit(1)


def _audit_summary(report: audit_mod.AuditReport) -> None:
    table = Table(title=f"Audit of the hidden checks (kill rate needed: "
                        f"{report.min_kill_rate:g} %)")
    for column in ("homework", "seeds (full)", "lost", "mutants", "killed", "survived",
                   "equivalent", "kill rate", "template", "constants", "verdict"):
        table.add_column(column, no_wrap=True)
    for hw in report.homeworks:
        s, m, t, c = hw.seeds, hw.mutants, hw.template, hw.constants
        rate = None if m is None else m.kill_rate
        table.add_row(
            hw.assignment,
            "-" if s is None else f"{s.seeds} ({s.full_seeds})",
            "-" if s is None else str(len(s.losses)),
            "-" if m is None else f"{len(m.results)} of {m.enumerated}",
            "-" if m is None else str(m.count("killed")),
            "-" if m is None else str(m.count("survived")),
            "-" if m is None else str(m.count("equivalent")),
            "-" if rate is None else f"{rate:.1f} %",
            "-" if t is None else f"{t.earned:g}/{t.possible:g}",
            "-" if c is None else f"{100 * c.share:.0f} % (public {100 * c.public_share:.0f} %)",
            "[red]FAIL[/]" if hw.problems else "[green]ok[/]")
    out.print(table)
    for hw in report.homeworks:
        for problem in hw.problems:
            out.print(f"{hw.assignment}: [red]{problem}[/]")
        for note in hw.notes:
            out.print(f"{hw.assignment}: {note}", markup=False)
        if hw.seeds is not None:
            for loss in hw.seeds.losses:
                out.print(f"{hw.assignment}: seed {loss.seed}: {loss.check} ({loss.outcome}): "
                          f"{loss.message}", markup=False)
        if hw.mutants is not None:
            for r in hw.mutants.results:
                if r.verdict in ("survived", "error"):
                    out.print(f"{hw.assignment}: {r.verdict} {r.id}: {r.summary}", markup=False)
                    out.print(r.diff or r.how, markup=False)


# run_checks is re-exported for scripts that grade one notebook by hand
__all__ = ["main", "run_checks"]
