"""The instructor's report as one self-contained HTML page: the numbers of
``grader.tools.report`` laid out, with figures drawn by matplotlib (no display needed) and
embedded as base64 PNG. Each check is named by the title stored with its verdicts, so writing
the report never reads or collects the check files."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import io
from pathlib import Path
from typing import TYPE_CHECKING

from grader.course.config import Course
from grader.output.files import write_text_atomic
from grader.output.pages import render
from grader.output.view import counted_rows, public_name
from grader.records import GradeRow
from grader.tools.marking import all_questions
from grader.tools.report import HomeworkReport, Leaderboard, Report, build_report

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# matplotlib and copydetect are imported by the functions that use them: a process that only
# writes feedback pages needs neither (0.7 s of imports).

BINS = list(range(0, 101, 10))  # histogram bins, percent; the last one holds 90..100
BAR = "#3b6ea8"  # the figures' bar colour (the page test looks for it in the screenshot)
OVER = "#b03a2e"  # over budget, the budget line


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def score_histograms(hw: HomeworkReport) -> str:
    """Raw and final percents of one homework, side by side, as a base64 PNG."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(8.0, 2.6), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, values, what in ((axes[0], hw.raw, "raw"), (axes[1], hw.final, "final")):
        ax.hist(values, bins=BINS, color=BAR, edgecolor="white")
        ax.set_xlim(0, 100)
        ax.set_xlabel(f"{what} score, %")
        ax.set_title(f"{what} ({len(values)} students)", fontsize=10)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("students")
    return _png(fig)


def pass_counts(report: Report) -> str:
    """Students by number of required homeworks passed, as a base64 PNG."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    counts = [sum(s.passed == n for s in report.standings)
              for n in range(len(report.required) + 1)]
    fig = Figure(figsize=(5.0, 2.4), layout="constrained")
    ax = fig.subplots()
    ax.bar(range(len(counts)), counts, color=BAR)
    ax.axvline(report.min_required - 0.5, color="#b03a2e", linestyle="--")
    ax.set_xticks(range(len(counts)))
    ax.set_xlabel(f"required homeworks at {report.min_percent:g} % or more")
    ax.set_ylabel("students")
    ax.set_title(f"dashed line: the pass mark ({report.min_required} or more)", fontsize=9)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return _png(fig)


def challenge_scatter(board: Leaderboard) -> str:
    """A challenge's class, each model a point: the share of its budget used (x; the dashed
    line at 100 % is the budget) against its score (y), with the curve of the draw (the bar for
    full points, the baseline for none) where every entry has the same draw, as a base64 PNG."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 3.2), layout="constrained")
    ax = fig.subplots()
    measured = [e.result for e in board.entries
                if e.result.used_share is not None and e.result.score is not None]
    for within, colour, label in ((True, BAR, "within budget"), (False, OVER, "over budget")):
        chosen = [r for r in measured if r.within_budget is within]
        if chosen:
            ax.scatter([100 * (r.used_share or 0.0) for r in chosen],
                       [r.score or 0.0 for r in chosen], color=colour, label=label, zorder=3)
    ax.axvline(100, color=OVER, linestyle="--", linewidth=1)
    if len(board.budgets) == 1 and board.entries:
        first = board.entries[0].result
        ax.axhline(first.bar, color="#2e7d32", linewidth=1,
                   label=f"full points ({first.bar:.3f})")
        ax.axhline(first.baseline, color="#777777", linestyle=":", linewidth=1,
                   label=f"no points ({first.baseline:.3f})")
        where = f"budget {first.budget:,.0f} {board.unit}"
    else:
        where = f"{len(board.budgets)} budgets drawn (graded in several runs)"
    ax.set_xlabel(f"share of the budget used, % ({where})")
    ax.set_ylabel(board.metric)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(f"{len(measured)} models measured", fontsize=9)
    return _png(fig)


def report_figures(report: Report) -> dict[str, str]:
    """Every figure of the page, by key: ``pass``, each homework id with a submission, and
    each challenge check's name."""
    figures = {hw.id: score_histograms(hw) for hw in report.homeworks if hw.submitted}
    figures.update({board.check: challenge_scatter(board)
                    for hw in report.homeworks for board in hw.challenges})
    if report.standings:
        figures["pass"] = pass_counts(report)
    return figures


def render_report(report: Report) -> str:
    """The report page (HTML)."""
    return render("report.html.j2", r=report, figures=report_figures(report))


def public_report(report: Report, salt: str) -> Report:
    """What ``report`` may show the class: only its challenges' leaderboards, each student
    named by a pseudonym that only the gradebook's secret ``salt`` makes (a student cannot
    work out a classmate's from their id); nothing else of any student."""
    homeworks = tuple(
        dataclasses.replace(
            hw, raw=(), final=(), statuses=(), failed_checks=(), not_checked=(), late=(),
            trouble=(), timing=None, questions=(),
            challenges=tuple(_pseudonymous(board, salt) for board in hw.challenges))
        for hw in report.homeworks if hw.challenges)
    return dataclasses.replace(report, homeworks=homeworks, standings=(), similarity=())


def _pseudonymous(board: Leaderboard, salt: str) -> Leaderboard:
    return dataclasses.replace(board, entries=tuple(
        dataclasses.replace(e, student=public_name(salt, e.student)) for e in board.entries))


def render_public(report: Report) -> str:
    """The class's page (HTML) of a ``public_report``: the challenges' leaderboards."""
    figures = {board.check: challenge_scatter(board)
               for hw in report.homeworks for board in hw.challenges}
    return render("report_public.html.j2", r=report, figures=figures)


def write_public(course: Course, rows: list[GradeRow], salt: str, out: Path,
                 now: dt.datetime) -> Report:
    """Write the class's page at ``out``: the challenges' leaderboards under pseudonyms."""
    report = public_report(build_report(course, rows, now, roster=()), salt)
    write_text_atomic(out, render_public(report))
    return report


def make_report(course: Course, rows: list[GradeRow], now: dt.datetime) -> Report:
    """The report of ``rows`` as of ``now``, with similarity flags: reads the templates and the
    submitted notebooks."""
    from grader.tools.similarity import homework_similarity

    counted = counted_rows(rows, course.counted)
    similarity = []
    for a in course.assignments:
        notebooks = [(s, Path(r.path)) for (s, hw), r in sorted(counted.items()) if hw == a.id]
        if notebooks:
            similarity.append(homework_similarity(a.id, notebooks, course.student_notebook(a.id),
                                                  course.similarity_threshold))
    return build_report(course, rows, now, similarity, questions=all_questions(course))


def write_report(course: Course, rows: list[GradeRow], out: Path, now: dt.datetime) -> Report:
    """Build the report as of ``now`` and write it at ``out`` (one self-contained HTML file)."""
    report = make_report(course, rows, now)
    write_text_atomic(out, render_report(report))
    return report
