"""The records that pass between the pipeline's stages, and every status a row can say.

Frozen dataclasses and enums only. This module imports nothing but the standard library, so the
stages that only read records (config, score, store, export, report) never pull in a kernel,
pytest or torch.

    discover -> Submission (a Task: one with its place in the run)
    execute  -> Execution (with CellError)         limits: Limits
    check    -> CheckRun (with CheckResult)        checks: CheckInfo
    score    -> Score (grader.pipeline.score)
    store    -> GradeRow                           one row of the gradebook
    answers  -> Answer (a written answer as read from the submitted file)
    marks    -> QuestionMark (with AppliedItem)    a person's mark of one answer, in a row
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from pathlib import Path


class Status(enum.Enum):
    """What a gradebook row says about its submission. The free-text detail lives beside it."""

    OK = "ok"  # the notebook ran to the end and the checks ran
    CELL_ERROR = "cell_error"  # at least one cell raised (later cells still ran)
    CELL_TIMEOUT = "cell_timeout"  # at least one cell was interrupted at the cell limit
    NOTEBOOK_TIMEOUT = "notebook_timeout"  # the whole notebook ran past its limit
    KERNEL_DIED = "kernel_died"  # the kernel died while running the notebook's cells
    KERNEL_LOST = "kernel_lost"  # it died, ran out of memory or stopped answering in the checks
    CHECKS_TIMEOUT = "checks_timeout"  # the check stage ran past its limit
    MALFORMED = "malformed"  # not a notebook, or no gradable file
    GRADER_ERROR = "grader_error"  # the grader itself failed: never the student's fault
    # said by exports about a student and assignment, never by a grading run
    TIME_UNKNOWN = "time_unknown"  # graded cleanly, but the submission time is unknown
    MARKING_PENDING = "marking_pending"  # graded cleanly; a written answer is not marked yet
    MISSING = "missing"  # on the roster, nothing submitted

    @property
    def is_students(self) -> bool:
        """Whether this status comes from the submission (everything but a grader error)."""
        return self is not Status.GRADER_ERROR


class Outcome(enum.Enum):
    """One check's verdict."""

    PASSED = "passed"
    FAILED = "failed"  # the student's answer, error, time-out or dead kernel
    ERROR = "error"  # the check itself broke: a grader problem, reported to the instructor


@dataclass(frozen=True)
class Limits:
    """Resource limits for grading one submission: the defaults of course.toml's ``[limits]``.

    Seconds, megabytes, characters; 0 means no limit (``sandbox`` excepted).
    """

    cell_timeout_s: float = 30.0  # one cell
    notebook_timeout_s: float = 240.0  # all the cells of the notebook
    call_timeout_s: float = 20.0  # one call from a check into the student's kernel
    checks_timeout_s: float = 300.0  # the whole check stage of one submission
    judge_timeout_s: float = 120.0  # one judge (opening the files a notebook wrote), by default
    kernel_start_s: float = 60.0  # a kernel's start, until it answers
    memory_mb: int = 4096  # address space of the kernel
    cpu_s: int = 600  # CPU time of the kernel
    fsize_mb: int = 256  # largest file the kernel may write
    nproc: int = 256  # tasks (processes and threads) the kernel may add
    max_output_chars: int = 100_000  # output kept per cell; more is cut with a marker
    max_reply_mb: int = 64  # one answer from the kernel to a check; more is the student's failure
    max_notebook_mb: int = 20  # a submitted notebook file; a larger one is malformed, not run
    tmp_mb: int = 512  # size of the kernel's private /tmp
    sandbox: str = "auto"  # "auto": bubblewrap where it works; "required"; "off"


@dataclass(frozen=True)
class Submission:
    """One student's notebook for one assignment, as found on disk.

    ``problem`` is empty for a gradable submission, else why it cannot be graded (no notebook,
    a symbolic link, ...). ``time_problem`` is empty when ``submitted_at`` is known.
    """

    student: str
    assignment: str
    path: Path
    sha256: str
    submitted_at: dt.datetime | None
    time_problem: str = ""
    problem: str = ""


@dataclass(frozen=True)
class Task:
    """A submission to grade, with its place in the run (rows come back in any order)."""

    index: int
    submission: Submission


@dataclass(frozen=True)
class CellError:
    """A cell that raised or was interrupted: its number in the notebook (1-based, markdown
    cells counted, as Jupyter lists them), the exception's type, the first line of its message."""

    cell: int
    ename: str
    message: str = ""

    def __str__(self) -> str:
        return f"cell {self.cell}: {self.ename}" + (f": {self.message}" if self.message else "")


# How many cell errors a row keeps; the rest are counted.
MAX_CELL_ERRORS = 20


def kept_cell_errors(errors: tuple[CellError, ...]) -> tuple[tuple[CellError, ...], int]:
    """The cell errors a row keeps (the first ``MAX_CELL_ERRORS``) and how many more there were."""
    return errors[:MAX_CELL_ERRORS], max(0, len(errors) - MAX_CELL_ERRORS)


@dataclass(frozen=True)
class Execution:
    """What running the notebook did: a status, a message for the student, every cell error."""

    status: Status
    detail: str
    seconds: float
    cells_run: int
    cell_errors: tuple[CellError, ...] = ()
    output_truncated: bool = False

    @property
    def kernel_usable(self) -> bool:
        """Whether checks may call into the kernel."""
        return self.status in (Status.OK, Status.CELL_ERROR, Status.CELL_TIMEOUT)


@dataclass(frozen=True)
class CheckInfo:
    """A check as collected: its name (``file stem::function``), its points, whether it is
    marked ``slow_check`` (it trains or evaluates a model), its title: what it checks, in
    words (its docstring's first paragraph, or its name when it has none), and its task: the
    student's function it calls first."""

    name: str
    points: float
    slow: bool
    title: str
    task: str = ""  # the student's function the check calls first, if it names one

    def result(self, outcome: Outcome, message: str = "") -> CheckResult:
        """This check's verdict."""
        return CheckResult(self.name, self.points, outcome, message, self.title, self.task)


@dataclass(frozen=True)
class ChallengeResult:
    """What a challenge check measured of one submission's model, all by the grader: its
    ``score`` (higher is better: ``metric``, e.g. "held-out accuracy", a fraction), the
    ``budget`` the check drew and what the model ``used`` of it (in ``unit``, counted by the
    grader's own counters), and the curve of this draw: full points at or above ``bar`` (the
    grader's own reference run on the same draw, ``reference``, less a stated margin), none at
    or below ``baseline`` (the stated simple method at the same budget), linear between. Over
    budget earns nothing. ``used``/``score`` are None when the model could not be measured."""

    metric: str
    unit: str
    budget: float
    used: float | None
    score: float | None
    bar: float
    baseline: float
    reference: float

    @property
    def within_budget(self) -> bool:
        return self.used is not None and self.used <= self.budget

    @property
    def used_share(self) -> float | None:
        """What the model used of its budget (1.0: all of it); None when not measured."""
        return None if self.used is None or not self.budget else self.used / self.budget

    @property
    def fraction(self) -> float:
        """The share of the check's points this result earns on the curve (0 over budget)."""
        if not self.within_budget or self.score is None:
            return 0.0
        if self.score >= self.bar:
            return 1.0
        if self.score <= self.baseline:
            return 0.0
        return (self.score - self.baseline) / (self.bar - self.baseline)

    def summary(self) -> str:
        """The curve and where this result sits on it, in words (a check's message)."""
        if self.used is None or self.score is None:
            return f"nothing was measured: no model came back within the budget of " \
                   f"{self.budget:,.0f} {self.unit}"
        where = (f"{self.metric} {self.score:.4f} with {self.used:,.0f} of {self.budget:,.0f} "
                 f"{self.unit}")
        if not self.within_budget:
            return f"{where}: over the budget, no points"
        return (f"{where}: full points at {self.bar:.4f} or above (the grader's own run "
                f"reached {self.reference:.4f} on this draw), none at {self.baseline:.4f} or "
                f"below (the baseline at the same budget); {self.fraction:.0%} of the points")


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict. ``points`` possible; ``earned`` all of them when passed, or for a
    challenge its ``fraction`` of them (the curve of ``challenge``; a failed challenge keeps
    what was measured, for the leaderboard). ``title`` says what the check tests (kept with the
    verdict, so that no page needs the check files)."""

    name: str
    points: float
    outcome: Outcome
    message: str = ""
    title: str = ""
    task: str = ""  # the student's function it checks (its task in the notebook), if known
    fraction: float = 1.0  # the share of ``points`` a passed check earns
    challenge: ChallengeResult | None = None

    @property
    def earned(self) -> float:
        return round(self.points * self.fraction, 4) if self.outcome is Outcome.PASSED else 0.0


@dataclass(frozen=True)
class CheckRun:
    """What the check stage did: a verdict per check, its wall time, and, when the kernel or
    the stage's time gave out part-way, that status (``KERNEL_LOST`` or ``CHECKS_TIMEOUT``)
    with a sentence saying what happened."""

    results: tuple[CheckResult, ...]
    seconds: float = 0.0
    problem: Status | None = None
    detail: str = ""


@dataclass(frozen=True)
class GradeRow:
    """One graded submission: what was run, what it scored, why. Percents are 0..100,
    times in seconds (``seconds`` the whole grading of the submission, ``exec_seconds`` the
    notebook's own run)."""

    student: str
    assignment: str
    sha256: str
    path: str
    submitted_at: str | None  # ISO 8601 with offset, None when unknown
    time_problem: str
    status: Status
    detail: str
    earned: float
    possible: float
    raw: float
    cap: float | None
    final: float | None
    late_reason: str
    seed: int
    graded_at: str  # ISO 8601 UTC
    seconds: float
    checks: tuple[CheckResult, ...]
    exec_seconds: float = 0.0
    cell_errors: tuple[CellError, ...] = ()  # the first MAX_CELL_ERRORS
    more_cell_errors: int = 0  # how many more there were
    # The written questions of the homework, each with its mark, once the row is combined
    # with the marks (grader.output.view.with_written); empty in a stored row, and for a
    # homework without written questions. Then earned, possible, raw and final count them.
    written: tuple[QuestionMark, ...] = ()

    @property
    def marking_pending(self) -> bool:
        """Whether a written question of this row still waits for a person's mark."""
        return any(m.earned is None for m in self.written)


@dataclass(frozen=True)
class Answer:
    """A written answer as read from a submitted notebook (never by running it): the text of
    the first markdown cell whose metadata names the question, the PNG of the figure it refers
    to, a content hash of both, and what is wrong with it (``flag``: empty, or "no answer", "2
    cells carry this question; the first is marked", "figure too large", ...)."""

    question: str
    text: str
    figure: bytes | None
    sha256: str  # of the text and the figure: an unchanged answer keeps its mark
    flag: str = ""
    missing: bool = False  # no answer: no cell, or the cell still holds the stub (0 points)


@dataclass(frozen=True)
class Mark:
    """A person's mark of one written answer (the answer by its hash): the rubric items
    applied, or points given directly (``points``; None: from the items), a comment, who
    saved it and when (ISO 8601 UTC), and how many saves it has had (``version``)."""

    student: str
    assignment: str
    question: str
    answer_sha256: str
    items: tuple[str, ...]
    points: float | None
    comment: str
    marker: str
    marked_at: str
    version: int


@dataclass(frozen=True)
class AppliedItem:
    """A rubric item applied to an answer: its id, its points (added, or taken when
    negative) and the sentence the student reads."""

    id: str
    points: float
    text: str


@dataclass(frozen=True)
class QuestionMark:
    """One written question of a submission as marked: its points possible, the points given
    (None while no one has marked it), the rubric items applied, the marker's comment, who
    marked it and when (ISO 8601 UTC), and the answer's flag."""

    question: str
    title: str
    points: float
    earned: float | None
    items: tuple[AppliedItem, ...] = ()
    comment: str = ""
    flag: str = ""
    missing: bool = False  # no answer was found
    override: bool = False  # the points were given directly, not from rubric items
    marker: str = ""
    marked_at: str = ""
