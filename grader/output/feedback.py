"""The feedback a student reads for one graded submission, as Markdown and as an HTML page,
both rendered from the row's view (``grader.output.view``): the final score and how the late
rule made it, the notebook's run in words, the cells that raised, each check by what it
tests (never its code), with its points and message, and each written answer's mark (the
rubric items applied, with their sentences, and the marker's comment)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from grader.course.config import Course
from grader.output.files import write_text_atomic
from grader.output.pages import render
from grader.output.view import RowView, counted_rows, view
from grader.records import GradeRow
from grader.text import markdown_block, markdown_inline


def feedback_markdown(v: RowView) -> str:
    """The feedback for one graded submission, as Markdown: what a submission controls is
    escaped (one line) or fenced (a check's message), so it is shown, never rendered."""
    md = markdown_inline
    lines = [f"# {v.title} ({v.assignment}): feedback for {md(v.student)}", "",
             f"- Final score: **{v.final_words}**",
             f"- Checks: {v.checks_earned:g} of {v.checks_possible:g} points"
             + ("" if v.written else f" (raw {v.raw:.2f} %)"),
             *_written_summary(v),
             f"- Late rule: {md(v.cap_words)}",
             f"- Submitted: {v.submitted_at}; graded: {v.graded_at}", "",
             f"## Your notebook's run: {v.status.value}", "", v.status_words, "",
             f"({md(v.detail)})", ""]
    if v.cell_errors:
        lines += ["## Cells that raised an error or were interrupted", ""]
        lines += [f"- {md(error)}" for error in v.cell_errors]
        lines.append("")
    lines += ["## Checks", ""]
    for task, checks in v.groups:
        lines += [f"### `{task}`" if task else "### Other checks", ""]
        for check in checks:
            mark = "passed" if check.passed else check.outcome
            lines.append(f"- [{mark}] {md(check.title)} ({check.earned:g} of {check.points:g} "
                         f"pt)")
            if check.message:
                lines += ["", *(f"  {line}" for line in markdown_block(check.message).split(
                    "\n")), ""]
        lines.append("")
    if v.leaderboard_name:
        lines += [f"On the class's challenge leaderboard you are **{v.leaderboard_name}**.", ""]
    lines += _written_markdown(v)
    return "\n".join(lines) + "\n"


def earned_words(earned: float | None, points: float) -> str:
    """``2 of 3 pt``, or that no one has marked it yet."""
    return "not marked yet" if earned is None else f"{earned:g} of {points:g} pt"


def _written_summary(v: RowView) -> list[str]:
    if not v.written:
        return []
    marked = [m for m in v.written if m.earned is not None]
    left = len(v.written) - len(marked)
    return [f"- Written answers: {sum(m.earned or 0.0 for m in marked):g} of "
            f"{sum(m.points for m in v.written):g} points"
            + (f" ({left} not marked yet)" if left else ""),
            f"- Checks and written answers: {v.earned:g} of {v.possible:g} points "
            f"(raw {v.raw:.2f} %)"]


def _written_markdown(v: RowView) -> list[str]:
    if not v.written:
        return []
    lines = ["", "## Written answers"]
    for m in v.written:
        lines += ["", f"### {m.title} ({earned_words(m.earned, m.points)})", ""]
        if m.missing:
            lines.append("No answer was found for this question.")
        if m.flag:
            lines += [f"({markdown_inline(m.flag)})", ""]
        lines += [f"- [{item.points:+g}] {item.text}" for item in m.items]
        if m.override and m.earned is not None:
            lines.append(f"- points given by the marker: {m.earned:g}")
        if m.comment:  # the marker's words, shown as they were typed
            lines += ["", "Comment:", "", markdown_block(m.comment)]
    return lines


def feedback_html(v: RowView) -> str:
    """The feedback for one graded submission, as a self-contained HTML page."""
    return render("feedback.html.j2", v=v)


def feedback_path(out_dir: Path, student: str, assignment: str, suffix: str) -> Path:
    """``out_dir/<student>/<assignment><suffix>``, the student id made safe as a folder name."""
    safe_student = student.replace(os.sep, "_").lstrip(".") or "_"
    return out_dir / safe_student / f"{assignment}{suffix}"


def write_feedback(course: Course, rows: Iterable[GradeRow], out_dir: Path,
                   salt: str = "") -> list[Path]:
    """The feedback of every counted submission, ``out_dir/<student>/<assignment>.md`` and
    ``.html`` beside it; return the Markdown files written. ``salt``: the gradebook's secret
    for the pseudonyms of the class's leaderboard (a challenge's feedback names the
    student's)."""
    written = []
    for (student, assignment), row in sorted(counted_rows(rows, course.counted).items()):
        v = view(row, course, salt)
        markdown = feedback_path(out_dir, student, assignment, ".md")
        write_text_atomic(markdown, feedback_markdown(v))
        write_text_atomic(feedback_path(out_dir, student, assignment, ".html"), feedback_html(v))
        written.append(markdown)
    return written
