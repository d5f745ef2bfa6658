"""The marking commands: ``grader mark`` (the page) and ``grader marks export|import`` (the
spreadsheet), each a thin layer over ``grader.tools.mark_app`` and
``grader.tools.marks_sheet``."""

from __future__ import annotations

import getpass
import secrets
from pathlib import Path

import click

from grader.cli.common import UsageFailure, course_option, err, gradebook_option, out
from grader.course.config import load_course
from grader.pipeline.store import open_gradebook


def _existing(gradebook: Path) -> Path:
    if not gradebook.exists():
        raise UsageFailure(f"{gradebook}: no gradebook yet; run `grader grade` first")
    return gradebook


@click.command("mark")
@course_option
@gradebook_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="The address to serve on. Another than this machine's loopback lets anyone "
                   "who can reach it and has the printed address read the answers (plain "
                   "HTTP): a warning is printed.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="The port (0: a free one).")
def mark_cmd(course_path: Path, gradebook: Path, host: str, port: int) -> None:
    """Serve the marking page for written answers: question by question, the next answer
    (names hidden), rubric items toggled by click or number key, a comment, save and next.
    Prints the address to open, with its token; stop with Ctrl+C.

    Example: grader mark --gradebook out/demo/gradebook.sqlite
    """
    try:
        from grader.tools.mark_app import create_app, is_loopback, serve
    except ImportError as exc:
        raise UsageFailure(f"grader mark needs Flask ({exc.name} is missing): run "
                           f"`make install`, or pip install '.[mark]'") from None
    course = load_course(course_path)
    _existing(gradebook)
    from grader.tools.marking import all_questions

    all_questions(course)  # a broken rubric is said now, not on the first page
    loopback = is_loopback(host)
    token = secrets.token_urlsafe(32)
    server = serve(create_app(course, gradebook.resolve(), token, loopback), host, port)
    shown = f"[{host}]" if ":" in host else host
    if not loopback:
        err.print(f"WARNING: serving on {host}, not this machine's loopback address: anyone "
                  f"who can reach it and has the address below can read and mark the "
                  f"students' answers, and the connection is not encrypted (HTTP).",
                  markup=False, soft_wrap=True)
    out.print(f"Marking page for {course.name} ({gradebook}); open:\n"
              f"    http://{shown}:{server.server_port}/?token={token}\n"
              f"Stop with Ctrl+C.", markup=False, soft_wrap=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        out.print("stopped")
    finally:
        server.server_close()


@click.group("marks")
def marks_group() -> None:
    """Marks of written answers in a spreadsheet, for those who mark offline.

    Example: grader marks export marks.csv; grader marks import marks.csv
    """


@marks_group.command("export")
@click.argument("csv_path", metavar="FILE.csv", type=click.Path(path_type=Path))
@course_option
@gradebook_option
@click.option("-a", "--assignment", "assignments", multiple=True,
              help="Only this homework (repeatable). Default: every one with written questions.")
def marks_export(csv_path: Path, course_path: Path, gradebook: Path,
                 assignments: tuple[str, ...]) -> None:
    """Write every answer to mark (student, question, the mark as it stands, the answer) to
    FILE.csv. Fill in items or points and a comment, then `grader marks import`.

    Example: grader marks export marks.csv --assignment hw1
    """
    from grader.tools.marks_sheet import export_marks

    course = load_course(course_path)
    with open_gradebook(_existing(gradebook)) as book:
        count = export_marks(book, course, csv_path, assignments)
    out.print(f"wrote {csv_path}: {count} answer(s)")


@marks_group.command("import")
@click.argument("csv_path", metavar="FILE.csv", type=click.Path(path_type=Path))
@course_option
@gradebook_option
@click.option("--marker", default=None,
              help="Whose marks these are (kept with each). Default: your login name.")
def marks_import(csv_path: Path, course_path: Path, gradebook: Path,
                 marker: str | None) -> None:
    """Store the marks of FILE.csv (a sheet from `grader marks export`, filled in). Every row
    is checked first; any bad row (unknown student or question, points out of range, an
    answer or a mark changed since the export) is named, and then nothing is stored.

    Example: grader marks import marks.csv --marker "A. Grader"
    """
    from grader.tools.marks_sheet import import_marks

    course = load_course(course_path)
    with open_gradebook(_existing(gradebook)) as book:
        done = import_marks(book, course, csv_path, marker or getpass.getuser())
    out.print(f"imported {csv_path}: {done.saved} mark(s) saved, {done.unchanged} row(s) "
              f"unchanged")
