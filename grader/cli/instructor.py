"""The instructor's commands: grade, export, report, audit, release-notebooks, release,
gradescope, and the LMS's import and push; mark and marks (written answers) live in
``grader.cli.marking``.

Loaded by ``grader.cli.main`` only when one of them is asked for, so that ``grader check`` (the
student's command) imports none of what they need; the student kit does not ship this module.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click
from rich.table import Table

from grader.cli.common import UsageFailure, course_option, err, gradebook_option, out
from grader.cli.marking import mark_cmd, marks_group  # noqa: F401 - grader.cli.main finds them here
from grader.course.config import AUDIT_PARTS, Course, load_course
from grader.kernel.sandbox import use_sandbox
from grader.pipeline.run import Graded, Progress, grade_all
from grader.pipeline.store import locked, open_gradebook
from grader.records import GradeRow, Status, Submission
from grader.tools.marking import scored_rows

if TYPE_CHECKING:
    from grader.lms.intake import Intake
    from grader.tools.audit import AuditReport

# Each command imports the heavy part of the engine it needs when it runs (the audit, the kit,
# the gradebook's tables with pandas): `grader grade` starts its kernels' fork server before
# importing torch, and every command starts without importing what the others need.

DEFAULT_CSV = Path("grades/gradebook.csv")
DEFAULT_LONG_CSV = Path("grades/gradebook_long.csv")
DEFAULT_FEEDBACK = Path("grades/feedback")
DEFAULT_REPORT = Path("grades/report.html")
DEFAULT_PUBLIC = Path("grades/leaderboard.html")
DEFAULT_LMS_OUT = Path("grades/lms")


@click.command()
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
    from grader.output.feedback import write_feedback
    from grader.output.tables import wide_table, write_csv

    course = load_course(course_path)
    with locked(gradebook) as book:
        graded = grade_all(course, submissions, book, assignments, force, seed,
                           _Printer(), jobs or _cores(), scheduler)
        rows = scored_rows(book, course)
        salt = book.public_salt()
    write_csv(wide_table(course, rows, dt.datetime.now(course.timezone)), csv_path)
    write_feedback(course, rows, feedback_dir, salt)
    _summary(graded, rows)
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
            err.print(f"  {row.student}/{row.assignment}: checks {row.raw:.2f} % (unchanged, kept)",
                      markup=False)
            return
        self.graded += 1
        rate = (time.monotonic() - self.start) / self.graded
        left = rate * (self.total - self.graded)
        err.print(f"  {row.student}/{row.assignment}: checks {row.raw:.2f} % ({row.status.value}, "
                  f"{row.seconds:.1f} s)   {self.graded}/{self.total} done, "
                  f"{rate:.1f} s per submission, about {_duration(left)} left", markup=False)


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _summary(graded: list[Graded], scored: list[GradeRow]) -> None:
    """The run's rows as the CSV and the feedback show them: a row with written questions
    counts their marks, and its final waits until every answer is marked."""
    from grader.output.view import display_status

    by_key = {(r.student, r.assignment, r.sha256): r for r in scored}
    table = Table(title="Grading summary")
    for column in ("student", "assignment", "status", "raw %", "cap %", "final %", "seconds"):
        table.add_column(column, no_wrap=True)
    table.add_column("detail", overflow="ellipsis", no_wrap=True, max_width=60)
    for g in graded:
        r = by_key.get((g.row.student, g.row.assignment, g.row.sha256), g.row)
        table.add_row(r.student, r.assignment, display_status(r).value, _pct(r.raw),
                      _pct(r.cap), _pct(r.final), f"{r.seconds:.1f}",
                      ("(kept) " if g.skipped else "") + r.detail)
    out.print(table)


@click.command("export")
@course_option
@gradebook_option
@click.option("--format", "fmt", type=click.Choice(["csv", "moodle", "canvas"]), default="csv",
              show_default=True,
              help="csv: the gradebook CSVs and the feedback; moodle: the assignment's grading "
                   "worksheet filled in and a feedback-files zip; canvas: Canvas's gradebook "
                   "import CSV.")
@click.option("--csv", "csv_path", type=click.Path(path_type=Path), default=DEFAULT_CSV,
              show_default=True, help="One row per student.")
@click.option("--long", "long_path", type=click.Path(path_type=Path), default=DEFAULT_LONG_CSV,
              show_default=True, help="One row per student and assignment (LMS import).")
@click.option("--feedback", "feedback_dir", type=click.Path(path_type=Path),
              default=DEFAULT_FEEDBACK, show_default=True, help="Folder for per-student feedback.")
@click.option("--as-of", "as_of", default=None, metavar="WHEN",
              help="The time the verdict column is made for, ISO 8601 (2026-12-09 or "
                   "2026-12-09T12:00; the course's time zone unless an offset is given). "
                   "Default: now.")
@click.option("-a", "--assignment", "assignments", multiple=True,
              help="moodle: the homework of the worksheet; canvas: a homework to export "
                   "(repeatable; default: every graded one).")
@click.option("--worksheet", type=click.Path(path_type=Path), default=None,
              help="moodle: the grading worksheet downloaded from the assignment.")
@click.option("--roster", type=click.Path(path_type=Path), default=None,
              help="moodle, canvas: the roster CSV to map students by (default: course.toml's).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=DEFAULT_LMS_OUT,
              show_default=True, help="moodle, canvas: the folder to write to.")
def export_cmd(course_path: Path, gradebook: Path, fmt: str, csv_path: Path, long_path: Path,
               feedback_dir: Path, as_of: str | None, assignments: tuple[str, ...],
               worksheet: Path | None, roster: Path | None, out_dir: Path) -> None:
    """Write the gradebook CSVs and the feedback files from the gradebook, or (--format) the
    grades and feedback in Moodle's or Canvas's import format. A final still pending (the
    submission time unknown) is left blank, never 0.

    Example: grader export --csv grades/gradebook.csv --long grades/gradebook_long.csv

    Example: grader export --format moodle -a hw1 --worksheet Grades-NNSC-hw1-42.csv

    Example: grader export --format canvas     (grades/lms/canvas-gradebook.csv)
    """
    course = load_course(course_path)
    rows = _rows(gradebook, course)
    if fmt != "csv":
        _lms_export(course, rows, fmt, assignments, worksheet, roster, out_dir)
        return
    from grader.output.feedback import write_feedback
    from grader.output.tables import long_table, wide_table, write_csv

    write_csv(wide_table(course, rows, _as_of(course, as_of)), csv_path)
    write_csv(long_table(course, rows), long_path)
    written = write_feedback(course, rows, feedback_dir, _salt(gradebook))
    out.print(f"wrote {csv_path}, {long_path} and {len(written)} feedback file(s) (Markdown "
              f"and HTML) in {feedback_dir}/")


def _as_of(course: Course, as_of: str | None) -> dt.datetime:
    """The time ``--as-of`` names (the course's time zone unless it gives an offset), or now."""
    if as_of is None:
        return dt.datetime.now(course.timezone)
    try:
        now = dt.datetime.fromisoformat(as_of)
    except ValueError:
        raise UsageFailure(f"--as-of: expected a date or time like 2026-12-09T12:00, "
                           f"got {as_of!r}") from None
    return now if now.tzinfo is not None else now.replace(tzinfo=course.timezone)


def _salt(gradebook: Path) -> str:
    """The gradebook's secret for the pseudonyms of the class's leaderboard."""
    with open_gradebook(gradebook) as book:
        return book.public_salt()


def _rows(gradebook: Path, course: Course) -> list[GradeRow]:
    """The gradebook's rows with their written answers' marks (``scored_rows``)."""
    if not gradebook.exists():
        raise UsageFailure(f"{gradebook}: no gradebook yet; run `grader grade` first")
    with open_gradebook(gradebook) as book:
        return scored_rows(book, course)


@click.command("report")
@course_option
@gradebook_option
@click.option("--out", "out_path", type=click.Path(path_type=Path), default=None,
              help=f"The HTML page to write (one self-contained file). Default: "
                   f"{DEFAULT_REPORT}, or {DEFAULT_PUBLIC} with --public.")
@click.option("--public", is_flag=True,
              help="Write the page for the class instead: the challenges' leaderboards only, "
                   "each student under a pseudonym (their feedback tells them theirs).")
@click.option("--as-of", "as_of", default=None, metavar="WHEN",
              help="The time the pass table is made for, ISO 8601 (2026-12-09 or "
                   "2026-12-09T12:00; the course's time zone unless an offset is given). "
                   "Default: now.")
def report_cmd(course_path: Path, gradebook: Path, out_path: Path | None, public: bool,
               as_of: str | None) -> None:
    """Write the instructor's report: per homework the score histograms, statuses, the checks
    most often failed, the challenges' leaderboards, late submissions by tier, notebooks that
    did not run, grading time; the pass table; and pairs of submissions with similar code
    (flags, never a grade change). With --public, the page to show the class: the
    challenges' leaderboards under pseudonyms, and nothing else of any student.

    Example: grader report --out grades/report.html (the class's page: grader report
    --public --out grades/leaderboard.html)
    """
    from grader.tools.report_page import write_public, write_report  # matplotlib: only here

    course = load_course(course_path)
    now = _as_of(course, as_of)
    out_path = out_path or (DEFAULT_PUBLIC if public else DEFAULT_REPORT)
    if out_path.is_dir():  # said before the work, not after it
        raise UsageFailure(f"{out_path}: cannot write the report: it is a folder (give the "
                           f"page to write, e.g. {out_path / 'report.html'})")
    rows = _rows(gradebook, course)
    try:
        if public:
            report = write_public(course, rows, _salt(gradebook), out_path, now)
        else:
            report = write_report(course, rows, out_path, now)
    except OSError as exc:
        raise UsageFailure(f"{out_path}: cannot write the report: {exc.strerror or exc}") from None
    if public:
        boards = [b for hw in report.homeworks for b in hw.challenges]
        out.print(f"wrote {out_path}: {len(boards)} challenge leaderboard(s), "
                  f"{sum(len(b.entries) for b in boards)} result(s) under pseudonyms")
        return
    out.print(f"wrote {out_path}: {len(report.standings)} students, {report.trouble} notebook(s) "
              f"that did not run to the end, {report.flagged_pairs} similar pair(s)")


@click.command("release-notebooks")
@course_option
@click.option("--check", "check_only", is_flag=True,
              help="Only report drift (exit 1 if a student notebook is out of date).")
def release_notebooks_cmd(course_path: Path, check_only: bool) -> None:
    """Generate the student notebooks in assignments/ from the reference notebooks.

    Example: grader release-notebooks --check
    """
    from grader.ship.student_notebooks import release_notebooks

    course = load_course(course_path)
    changed = release_notebooks(course, check_only)
    for path in changed:
        out.print(f"{'out of date' if check_only else 'wrote'}: {path}")
    if check_only and changed:
        sys.exit(1)
    if not changed:
        out.print("student notebooks are up to date")


@click.command("audit")
@click.argument("assignments", nargs=-1)
@course_option
@click.option("--only", "parts", multiple=True, type=click.Choice(AUDIT_PARTS),
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
    from grader.tools import audit as audit_mod

    course = load_course(course_path)
    options = audit_mod.Options(parts=parts or audit_mod.PARTS, seed=seed, seeds=seeds,
                                slow_seeds=slow_seeds, mutants=mutants, mutant_seed=mutant_seed,
                                mutant_ids=mutant_ids, jobs=jobs)
    if list_mutants:
        for hw in assignments or [a.id for a in course.assignments]:
            for m in audit_mod.list_mutants(course, hw):
                out.print(f"{hw} {m.id}  {m.summary}", markup=False, soft_wrap=True)
        return
    use_sandbox(course.limits)
    report = audit_mod.audit(course, assignments, options, lambda line: err.print(
        line, markup=False, soft_wrap=True))
    _audit_summary(report)
    if json_path is not None:
        audit_mod.write_json(report, json_path)
        out.print(f"report: {json_path}")
    if not report.ok:
        sys.exit(1)


def _audit_summary(report: AuditReport) -> None:
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


@click.command("release")
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
    from grader.ship.kit import choose, write_kit

    course = load_course(course_path)
    today = as_of.date() if as_of else dt.datetime.now(course.timezone).date()
    chosen, skipped = choose(course, assignments, every, today)
    for message in skipped:
        err.print(message)
    kit = write_kit(course, folder, chosen, archive, force)
    out.print(f"wrote the kit of {', '.join(kit.assignments)} to {kit.folder}/ "
              f"({kit.files} files)" + (f" and {kit.archive}" if kit.archive else ""))


@click.command("gradescope")
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
    from grader.ship.gradescope.bundle import write_bundle

    course = load_course(course_path)
    bundle = write_bundle(course, assignment, zip_path, visibility, force)
    out.print(f"wrote {bundle.path}: the Gradescope autograder of {bundle.assignment} "
              f"({bundle.checks} check file(s), {bundle.files} files)")


# -- the LMS: import, export, push ------------------------------------------------------------


def _zone(course_zone: ZoneInfo, name: str | None) -> ZoneInfo:
    if name is None:
        return course_zone
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageFailure(f"--timezone: unknown time zone {name!r} (e.g. Europe/Moscow)") \
            from None


def _import_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options both `grader import` commands share: the homework, where to store, whom to
    map to, and the grading run that follows (as `grader grade` takes them)."""
    options = [
        click.option("-a", "--assignment", required=True,
                     help="The homework this download is of (an id of course.toml)."),
        click.option("--timezone", "zone", default=None, metavar="ZONE",
                     help="The zone of the LMS's times that name none (Moodle's worksheet, a "
                          "times CSV without offsets). Default: the course's."),
        click.option("--roster", type=click.Path(path_type=Path), default=None,
                     help="The roster CSV to map students by (student,name,email,lms_id). "
                          "Default: course.toml's roster."),
        click.option("--out", "out_dir", type=click.Path(path_type=Path),
                     default=DEFAULT_LMS_OUT, show_default=True,
                     help="Where the notebooks and <assignment>/manifest.csv are written."),
        click.option("--import-only", is_flag=True,
                     help="Write the notebooks and the manifest; do not grade."),
        course_option, gradebook_option,
        click.option("--force", is_flag=True, help="Regrade submissions already graded."),
        click.option("--seed", type=int, default=None, help="Seed of the hidden checks' draws."),
        click.option("-j", "--jobs", type=click.IntRange(1, 64), default=None,
                     help="Notebooks graded at once. Default: the number of cores."),
        click.option("--csv", "csv_path", type=click.Path(path_type=Path), default=DEFAULT_CSV,
                     show_default=True, help="The gradebook CSV written after grading."),
        click.option("--feedback", "feedback_dir", type=click.Path(path_type=Path),
                     default=DEFAULT_FEEDBACK, show_default=True,
                     help="Folder for per-student feedback."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _store_and_grade(ctx: click.Context, intake: Intake, out_dir: Path, import_only: bool,
                     **grading: object) -> None:
    from grader.lms.manifest import store

    stored = store(intake, out_dir)
    out.print(f"took {len(intake.handins)} submission(s) of {intake.assignment} from "
              f"{intake.download.name} ({intake.lms}): {stored.added} new, {stored.replaced} "
              f"downloaded again, {stored.kept} kept from earlier imports; manifest: "
              f"{stored.manifest}", markup=False, soft_wrap=True)
    for note in intake.notes:
        err.print(f"  note: {note}", markup=False, soft_wrap=True)
    if intake.unknown_times:
        err.print(f"warning: {intake.unknown_times} submission time(s) unknown: their finals "
                  f"stay pending until the time is known", markup=False, soft_wrap=True)
    if not import_only:
        ctx.invoke(grade, submissions=stored.manifest, assignments=(intake.assignment,),
                   scheduler=None, **grading)


@click.group("import")
def import_cmd() -> None:
    """Take an LMS's download of a homework's submissions, map each file to a student of the
    roster (by email or lms_id), with its submission time, write the notebooks and a manifest
    CSV (grades/lms/<hw>/manifest.csv), and grade them as `grader grade` does.

    Example: grader import moodle NNSC-hw1-42.zip --worksheet Grades-NNSC-hw1-42.csv -a hw1

    Example: grader import canvas nnsc-hw1_submissions.zip --times times.csv -a hw1
    """


@import_cmd.command("moodle")
@click.argument("zip_path", metavar="ZIP", type=click.Path(path_type=Path))
@click.option("--worksheet", type=click.Path(path_type=Path), required=True,
              help="The assignment's offline grading worksheet (Grades-...csv): who each "
                   "participant is, and the submission times.")
@_import_options
@click.pass_context
def import_moodle_cmd(ctx: click.Context, /, zip_path: Path, worksheet: Path, assignment: str,
                      zone: str | None, roster: Path | None, out_dir: Path, import_only: bool,
                      course_path: Path, **grading: object) -> None:
    """Import Moodle's "Download all submissions" zip (folders or flat files) with the
    assignment's grading worksheet, then grade.

    Example: grader import moodle NNSC-hw1-42.zip --worksheet Grades-NNSC-hw1-42.csv -a hw1
    """
    from grader.lms import moodle
    from grader.lms.people import people

    course = load_course(course_path)
    course.assignment(assignment)
    intake = moodle.read_download(people(course, roster), zip_path, worksheet, assignment,
                                  _zone(course.timezone, zone))
    _store_and_grade(ctx, intake, out_dir, import_only, course_path=course_path, **grading)


@import_cmd.command("canvas")
@click.argument("zip_path", metavar="ZIP", type=click.Path(path_type=Path))
@click.option("--times", "times_path", type=click.Path(path_type=Path), default=None,
              help="A CSV of submission times: user_id,submitted_at[,anonymous_id][,email].")
@click.option("--canvas", "canvas_url", default=None, metavar="URL",
              help="Ask Canvas's REST API at URL for the times (token in CANVAS_API_TOKEN).")
@click.option("--canvas-course", type=int, default=None,
              help="The Canvas course id (default: course.toml's [lms] canvas_course).")
@click.option("--canvas-assignment", type=int, default=None,
              help="The Canvas assignment id (default: [lms.canvas_assignments] of -a).")
@_import_options
@click.pass_context
def import_canvas_cmd(ctx: click.Context, /, zip_path: Path, times_path: Path | None,
                      canvas_url: str | None, canvas_course: int | None,
                      canvas_assignment: int | None, assignment: str, zone: str | None,
                      roster: Path | None, out_dir: Path, import_only: bool, course_path: Path,
                      **grading: object) -> None:
    """Import Canvas's "Download Submissions" zip, with the submission times from a CSV
    (--times) or from Canvas's REST API (--canvas), then grade. Without either, every time is
    unknown and every final pending.

    Example: grader import canvas nnsc-hw1_submissions.zip --times times.csv -a hw1

    With the API: CANVAS_API_TOKEN=... grader import canvas nnsc-hw1_submissions.zip
    --canvas https://canvas.example.edu --canvas-course 1234 --canvas-assignment 5678 -a hw1
    """
    from grader.lms import canvas
    from grader.lms.people import people

    course = load_course(course_path)
    course.assignment(assignment)
    if times_path is not None and canvas_url is not None:
        raise UsageFailure("give --times or --canvas, not both")
    times = canvas.NO_TIMES
    if times_path is not None:
        times = canvas.read_times(times_path, _zone(course.timezone, zone))
    elif canvas_url is not None:
        from grader.lms.canvas_api import fetch_times

        mapped = course.lms.canvas_assignments.get(assignment)
        course_id = canvas_course or course.lms.canvas_course
        assignment_id = canvas_assignment or (mapped.id if mapped else 0)
        if not course_id or not assignment_id:
            raise UsageFailure("--canvas needs --canvas-course and --canvas-assignment (or "
                               "[lms] canvas_course and canvas_assignments in course.toml)")
        times = fetch_times(canvas_url.rstrip("/"), course_id, assignment_id)
    intake = canvas.read_download(people(course, roster), zip_path, assignment, times)
    _store_and_grade(ctx, intake, out_dir, import_only, course_path=course_path, **grading)


def _lms_export(course: Course, rows: list[GradeRow], fmt: str, assignments: tuple[str, ...],
                worksheet: Path | None, roster: Path | None, out_dir: Path) -> None:
    from grader.lms import export
    from grader.lms.people import people

    found = people(course, roster)
    if fmt == "moodle":
        if worksheet is None or len(assignments) != 1:
            raise UsageFailure("--format moodle needs --worksheet (the grading worksheet "
                               "downloaded from the assignment) and one --assignment")
        course.assignment(assignments[0])
        done = export.moodle_export(course, rows, found, worksheet, assignments[0], out_dir)
    else:
        chosen = export.canvas_assignments(course, rows, assignments)
        done = export.canvas_export(course, rows, found, chosen,
                                    out_dir / "canvas-gradebook.csv")
    out.print(f"wrote {', '.join(map(str, done.files))}: {done.graded} grade(s)", markup=False,
              soft_wrap=True)
    for note in done.notes:
        err.print(f"  note: {note}", markup=False, soft_wrap=True)
    if done.pending:
        err.print(f"warning: {done.pending} final(s) pending (submission time unknown) left "
                  f"blank, not 0", markup=False, soft_wrap=True)


@click.group("push")
def push_cmd() -> None:
    """Post grades and feedback to an LMS through its API (Canvas).

    Example: grader push canvas --assignment hw1
    """


@push_cmd.command("canvas")
@course_option
@gradebook_option
@click.option("-a", "--assignment", "assignments", multiple=True,
              help="Push this homework (repeatable). Default: every graded homework.")
@click.option("--dry-run/--post", "dry_run", default=True, show_default=True,
              help="Show what would change (the default), or post it.")
@click.option("--canvas", "canvas_url", default=None, metavar="URL",
              help="The Canvas server (default: course.toml's [lms] canvas_url).")
@click.option("--canvas-course", type=int, default=None,
              help="The Canvas course id (default: [lms] canvas_course).")
@click.option("--roster", type=click.Path(path_type=Path), default=None,
              help="The roster CSV with each student's Canvas user id (lms_id).")
def push_canvas_cmd(course_path: Path, gradebook: Path, assignments: tuple[str, ...],
                    dry_run: bool, canvas_url: str | None, canvas_course: int | None,
                    roster: Path | None) -> None:
    """Compare each final (after the late rule, in the Canvas assignment's points) with the
    grade Canvas holds, and post the grade with the feedback as a comment where they differ.
    A dry run by default; --post posts. Run again after a stop: only what is left is posted.
    Finals pending (submission time unknown) are left out. The token: CANVAS_API_TOKEN.

    Example: grader push canvas --assignment hw1            (shows what would change)

    Example: grader push canvas --assignment hw1 --post     (posts it)
    """
    from grader.lms.canvas_api import plan_push
    from grader.lms.export import canvas_assignments
    from grader.lms.people import people

    course = load_course(course_path)
    rows = _rows(gradebook, course)
    chosen = canvas_assignments(course, rows, assignments)
    url = (canvas_url or course.lms.canvas_url).rstrip("/")
    course_id = canvas_course or course.lms.canvas_course
    if not url or not course_id:
        raise UsageFailure("no Canvas: give --canvas URL and --canvas-course ID (or [lms] "
                           "canvas_url and canvas_course in course.toml)")
    push = plan_push(course, rows, people(course, roster), chosen, url, course_id)
    plan = push.plan
    table = Table(title=("would post" if dry_run else "posting") + f" to {url}")
    for column in ("student", "homework", "Canvas user", "now", "new", "comment"):
        table.add_column(column, overflow="ellipsis", no_wrap=True, max_width=60)
    for c in plan.changes:
        table.add_row(c.student, c.assignment, c.user_id,
                      "-" if c.current is None else f"{c.current:g}", f"{c.new:.2f}",
                      c.comment.splitlines()[0] if c.comment else "")
    out.print(table)
    for note in plan.notes:
        err.print(f"  note: {note}", markup=False)
    if plan.pending:
        err.print(f"warning: {plan.pending} final(s) pending (submission time unknown) left "
                  f"out", markup=False, soft_wrap=True)
    summary = f"{len(plan.changes)} to post, {plan.unchanged} already equal"
    if dry_run:
        out.print(f"dry run: {summary}; nothing posted (--post posts it)")
        return
    posted = push.post(lambda c: out.print(f"  posted {c.student} {c.assignment}: {c.new:.2f}",
                                           markup=False))
    out.print(f"posted {posted} grade(s) with their comments; {plan.unchanged} already equal")
