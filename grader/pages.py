"""HTML pages: the instructor's report and the students' feedback, one self-contained file each.

The pages are jinja2 templates (``grader/templates``) filled from records: the report from
``grader.report.Report``, the feedback from a gradebook row. Figures are drawn with matplotlib
(no display needed) and embedded as base64 PNG; no page needs JavaScript or the network.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from grader.check import describe
from grader.config import Course
from grader.errors import ChecksConfigError
from grader.export import counted_rows, display_status, feedback_path, write_text_atomic
from grader.records import GradeRow, Outcome
from grader.report import HomeworkReport, Report, build_report
from grader.rules import LatePolicy

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# matplotlib and copydetect are imported by the report's functions that use them: the students'
# feedback pages, written at the end of every grading run, need neither (0.7 s of imports).

_ENV = Environment(loader=FileSystemLoader(Path(__file__).with_name("templates")),
                   autoescape=True, undefined=StrictUndefined, trim_blocks=True,
                   lstrip_blocks=True)
BINS = list(range(0, 101, 10))  # histogram bins, percent; the last one holds 90..100
BAR = "#3b6ea8"  # the figures' bar colour (the page test looks for it in the screenshot)

STATUS_WORDS = {
    "ok": "Your notebook ran from the first cell to the last without an error.",
    "cell_error": "At least one cell raised an error. The cells after it still ran, and the "
                  "checks called what your notebook had defined.",
    "cell_timeout": "A cell ran past the time limit for one cell and was interrupted; the cells "
                    "after it still ran, and the checks called what your notebook had defined.",
    "notebook_timeout": "The notebook ran past the time limit for the whole notebook and was "
                        "stopped, so the checks could not call it.",
    "kernel_died": "The Python process running your notebook stopped (a crash, or more memory "
                   "than allowed), so the checks could not call it.",
    "kernel_lost": "Your notebook ran, but the Python process running it stopped, ran out of "
                   "memory or stopped answering while the checks were calling it; the checks "
                   "left failed.",
    "checks_timeout": "Your notebook ran, but the checks ran past the time allowed for all of "
                      "them together (a function that is very slow, or never returns); the "
                      "checks left failed without running.",
    "malformed": "The file could not be read as a notebook, so nothing of it could run.",
    "grader_error": "The grader itself failed on your submission. This is not your fault; "
                    "your instructor sees it in the report and will grade it again.",
    "time_unknown": "Your notebook ran to the end, but the time you handed it in is not "
                    "known, so your final score waits for your instructor.",
}


# -- figures -----------------------------------------------------------------------------------


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


def report_figures(report: Report) -> dict[str, str]:
    """Every figure of the page, by key: ``pass`` and each homework id with a submission."""
    figures = {hw.id: score_histograms(hw) for hw in report.homeworks if hw.submitted}
    if report.standings:
        figures["pass"] = pass_counts(report)
    return figures


# -- the report --------------------------------------------------------------------------------


def render_report(report: Report) -> str:
    """The report page (HTML)."""
    return _ENV.get_template("report.html.j2").render(r=report, figures=report_figures(report))


def check_summaries(course: Course, assignments: Iterable[str]) -> dict[str, dict[str, str]]:
    """Per assignment, check name -> the first line of its docstring, from the hidden checks.
    An assignment whose checks cannot be read gets none (its checks show by name)."""
    found: dict[str, dict[str, str]] = {}
    for assignment in sorted(set(assignments)):
        try:
            infos = describe(course.hidden_checks(assignment))
        except ChecksConfigError:
            infos = ()
        found[assignment] = {i.name: i.summary for i in infos if i.summary}
    return found


def make_report(course: Course, rows: list[GradeRow], now: dt.datetime) -> Report:
    """The report of ``rows`` as of ``now``, with check summaries and similarity flags: reads
    the hidden checks, the templates and the submitted notebooks."""
    from grader.similarity import homework_similarity

    counted = counted_rows(rows, course.counted)
    similarity = []
    for a in course.assignments:
        notebooks = [(s, Path(r.path)) for (s, hw), r in sorted(counted.items()) if hw == a.id]
        if notebooks:
            similarity.append(homework_similarity(a.id, notebooks, course.student_notebook(a.id),
                                                  course.similarity_threshold))
    summaries = check_summaries(course, {r.assignment for r in rows})
    return build_report(course, rows, now, summaries, similarity)


def write_report(course: Course, rows: list[GradeRow], out: Path, now: dt.datetime) -> Report:
    """Build the report as of ``now`` and write it at ``out`` (one self-contained HTML file)."""
    report = make_report(course, rows, now)
    write_text_atomic(out, render_report(report))
    return report


# -- student feedback --------------------------------------------------------------------------


def cell_errors(row: GradeRow) -> tuple[str, ...]:
    """Every cell error kept with ``row``, one line each, then how many more there were."""
    errors, more = row.cell_error_list
    return tuple(str(e) for e in errors) + ((f"... and {more} more",) if more else ())


def cap_words(row: GradeRow, policy: LatePolicy) -> str:
    """How the final score follows from the raw score and the late cap, in words."""
    if row.cap is None or row.final is None:
        return (f"{row.late_reason} Your final score is pending until your instructor knows "
                f"when you handed in; the checks gave {row.raw:.2f} %.")
    if policy is LatePolicy.SCALE:
        rule = f"raw {row.raw:.2f} % × cap {row.cap:g} % / 100"
    else:
        rule = f"the smaller of raw {row.raw:.2f} % and cap {row.cap:g} %"
    return f"{row.late_reason} Final score = {rule} = {row.final:.2f} %."


def render_feedback(row: GradeRow, title: str, policy: LatePolicy,
                    summaries: Mapping[str, str]) -> str:
    """The feedback page for one graded submission: each check by the first line of its
    docstring (never its code), its points and message."""
    status = display_status(row).value
    checks = [{"summary": summaries.get(c.name, c.name), "points": c.points,
               "earned": c.earned, "passed": c.outcome is Outcome.PASSED,
               "outcome": c.outcome.value,
               "message": "" if c.outcome is Outcome.PASSED else c.message}
              for c in row.check_results]
    return _ENV.get_template("feedback.html.j2").render(
        row=row, title=title, status=status,
        status_words=STATUS_WORDS.get(status, f"The notebook's run ended as {status}."),
        cap_words=cap_words(row, policy), cell_errors=cell_errors(row), checks=checks)


def write_html_feedback(course: Course, rows: Iterable[GradeRow], out_dir: Path,
                        summaries: Mapping[str, Mapping[str, str]]) -> list[Path]:
    """One HTML page per counted submission, ``out_dir/<student>/<assignment>.html``, beside
    the Markdown feedback."""
    titles = {a.id: a.title for a in course.assignments}
    written = []
    for (student, assignment), row in sorted(counted_rows(rows, course.counted).items()):
        path = feedback_path(out_dir, student, assignment, ".html")
        write_text_atomic(path, render_feedback(row, titles.get(assignment, assignment),
                                           course.late_policy, summaries.get(assignment, {})))
        written.append(path)
    return written
