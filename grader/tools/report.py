"""The instructor's report as data: every number ``grader report`` shows, from the gradebook.

``build_report`` is a pure function of the course, the gradebook rows, the similarity flags and
the time the report is made for; the page (``grader.tools.report_page``) only lays out what it
returns. Percents are 0..100, seconds are wall-clock seconds, shares are 0..1.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from grader.course.config import Course
from grader.course.questions import Question
from grader.course.rules import late_tiers
from grader.output.standing import Standing, standing
from grader.output.view import STATUS_WORDS, counted_rows, display_status
from grader.records import ChallengeResult, CheckResult, GradeRow, Outcome, Status
from grader.tools.similarity import HomeworkSimilarity

# Statuses of a notebook that ran and whose checks ran on what it defined; any other status
# (a timeout, a dead kernel, a malformed file, a grader error, ...) is listed as trouble.
RAN = frozenset({Status.OK, Status.CELL_ERROR})
# Statuses whose checks all ran on what a notebook that ran defined: the checks failed there
# say something about the checks and the teaching; the others fail every check at once.
CHECKED = frozenset({Status.OK, Status.CELL_ERROR, Status.CELL_TIMEOUT})
TOP_FAILED = 10  # failed checks listed per homework


@dataclass(frozen=True)
class FailedCheck:
    """One check, and how many of the students graded on it failed it."""

    name: str  # file stem::function
    title: str  # what it tests, in words (stored with its verdicts)
    points: float
    failed: int  # failed, or broke with a grader error
    errors: int  # of which the check itself broke (a grader problem)
    graded: int

    @property
    def share(self) -> float:
        return self.failed / self.graded


@dataclass(frozen=True)
class LateGroup:
    """The students whose counted submission fell in one late tier."""

    label: str
    cap: float | None  # percent; None: the submission time is unknown
    students: tuple[str, ...]


@dataclass(frozen=True)
class Trouble:
    """A counted notebook that did not run to the end (timeout, crash, unreadable, ...)."""

    student: str
    status: str
    words: str  # what the status means (grader.output.view.STATUS_WORDS)
    detail: str


@dataclass(frozen=True)
class Timing:
    """Grading time of every graded row of a homework, in seconds."""

    runs: int
    median_s: float
    max_s: float
    total_s: float


@dataclass(frozen=True)
class ItemUse:
    """A rubric item, and how many of the marked answers it was applied to."""

    id: str
    text: str
    points: float
    used: int


@dataclass(frozen=True)
class QuestionReport:
    """One written question over the counted submissions: how far marking has got, the
    points given, and how often each rubric item was used."""

    id: str
    title: str
    points: float
    answers: int  # counted submissions
    marked: int  # marked by a person
    missing: int  # no answer and no mark: 0 points
    left: int  # still to mark
    flagged: int  # answers with a flag (a duplicate cell, a figure left out, no answer, ...)
    distribution: tuple[tuple[float, int], ...]  # points given -> students, lowest first
    items: tuple[ItemUse, ...]  # in the rubric's order

    @property
    def done_share(self) -> float:
        """The share of the answers (0..1) that have their points: marked or missing."""
        return (self.marked + self.missing) / self.answers if self.answers else 1.0


@dataclass(frozen=True)
class ChallengeEntry:
    """One student's result in a challenge, with the points the check gave it."""

    student: str
    result: ChallengeResult  # what the grader measured, and the curve of the student's draw
    earned: float
    points: float


@dataclass(frozen=True)
class Leaderboard:
    """One challenge check over the counted submissions that it measured, best first: within
    budget before over it and before nothing measured; then by the share of points, by how far
    the score is above the grader's own run on the same draw, by less of the budget used."""

    check: str  # file stem::function
    title: str
    task: str  # the student's function the challenge calls ("" when not known)
    metric: str
    unit: str
    entries: tuple[ChallengeEntry, ...]
    unmeasured: int  # counted submissions whose check measured nothing (it failed before)

    @property
    def budgets(self) -> tuple[float, ...]:
        """The budgets drawn: one per grading run the counted submissions come from."""
        return tuple(sorted({e.result.budget for e in self.entries}))

    @property
    def ranked(self) -> tuple[tuple[int | None, ChallengeEntry], ...]:
        """Each entry with its rank (1 = best; None over budget or not measured); entries with
        the same share, score and draw share a rank."""
        found: list[tuple[int | None, ChallengeEntry]] = []
        previous: tuple[float, ...] | None = None
        for position, entry in enumerate(self.entries, start=1):
            key = _standing(entry)
            if not entry.result.within_budget:
                found.append((None, entry))
            elif found and key == previous:
                found.append((found[-1][0], entry))
            else:
                found.append((position, entry))
            previous = key
        return tuple(found)


def _standing(e: ChallengeEntry) -> tuple[float, ...]:
    r = e.result
    measured = r.score is not None and r.used is not None
    return (0.0 if r.within_budget else 1.0 if measured else 2.0,
            -(e.earned / e.points if e.points else 0.0),
            -((r.score or 0.0) - r.reference), r.used or 0.0)


def _leaderboards(counted: Sequence[GradeRow]) -> tuple[Leaderboard, ...]:
    entries: dict[str, list[ChallengeEntry]] = defaultdict(list)
    measured: dict[str, tuple[CheckResult, ChallengeResult]] = {}  # the last, for the names
    tried: Counter[str] = Counter()
    for row in counted:
        for check in row.checks:
            tried[check.name] += 1
            if check.challenge is not None:
                entries[check.name].append(
                    ChallengeEntry(row.student, check.challenge, check.earned, check.points))
                measured[check.name] = (check, check.challenge)
    boards = []
    for name, (check, result) in sorted(measured.items()):
        ranked = sorted(entries[name], key=lambda e: (_standing(e), e.student))
        boards.append(Leaderboard(name, check.title or name, check.task, result.metric,
                                  result.unit, tuple(ranked), tried[name] - len(ranked)))
    return tuple(boards)


@dataclass(frozen=True)
class HomeworkReport:
    id: str
    title: str
    required: bool
    raw: tuple[float, ...]  # counted submissions' raw percents, by student
    final: tuple[float, ...]  # the known finals among them (an unknown time has none)
    pending: int  # counted submissions whose final waits for a submission time
    missing: int  # students in the report with no submission of this homework
    statuses: tuple[tuple[str, int], ...]  # shown status -> students, most frequent first
    failed_checks: tuple[FailedCheck, ...]  # most often failed first, at most TOP_FAILED
    not_checked: tuple[tuple[str, int], ...]  # status -> counted submissions left out of them
    late: tuple[LateGroup, ...]  # from the highest cap down; time unknown last
    trouble: tuple[Trouble, ...]
    timing: Timing | None  # None when nothing was graded
    questions: tuple[QuestionReport, ...] = ()  # its written questions
    challenges: tuple[Leaderboard, ...] = ()  # its challenge checks, with their leaderboards

    @property
    def submitted(self) -> int:
        return len(self.raw)

    @property
    def raw_mean(self) -> float | None:
        return statistics.fmean(self.raw) if self.raw else None

    @property
    def raw_median(self) -> float | None:
        return statistics.median(self.raw) if self.raw else None

    @property
    def final_mean(self) -> float | None:
        return statistics.fmean(self.final) if self.final else None

    @property
    def final_median(self) -> float | None:
        return statistics.median(self.final) if self.final else None


@dataclass(frozen=True)
class Report:
    course: str
    made_at: str  # the instant the report is made for, on the course's clock, the zone named
    min_percent: float
    min_required: int
    required: tuple[str, ...]
    homeworks: tuple[HomeworkReport, ...]
    standings: tuple[Standing, ...]
    similarity: tuple[HomeworkSimilarity, ...]

    @property
    def flagged_pairs(self) -> int:
        return sum(len(h.pairs) for h in self.similarity)

    @property
    def trouble(self) -> int:
        return sum(len(h.trouble) for h in self.homeworks)

    def verdicts(self) -> dict[str, tuple[str, ...]]:
        """Students by the report's words for their verdict (``Standing.words``)."""
        groups: dict[str, list[str]] = defaultdict(list)
        for s in self.standings:
            groups[s.words].append(s.student)
        return {verdict: tuple(students) for verdict, students in groups.items()}


def _tier_label(cap: float | None, labels: Mapping[float, str]) -> str:
    if cap is None:
        return "time unknown"
    if cap in labels:
        return f"by {labels[cap]} (cap {cap:g} %)"
    return f"past every deadline (cap {cap:g} %)" if cap == 0 else f"cap {cap:g} %"


def _failed_checks(rows: Sequence[GradeRow]) -> list[FailedCheck]:
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # failed, errors, graded
    points: dict[str, float] = {}
    titles: dict[str, str] = {}
    for row in rows:
        for check in row.checks:
            counts = tally[check.name]
            counts[0] += check.outcome is not Outcome.PASSED
            counts[1] += check.outcome is Outcome.ERROR
            counts[2] += 1
            points[check.name] = check.points
            titles[check.name] = check.title or titles.get(check.name) or check.name
    found = [FailedCheck(name, titles[name], points[name], *counts)
             for name, counts in tally.items() if counts[0]]
    found.sort(key=lambda c: (-c.share, -c.failed, c.name))
    return found[:TOP_FAILED]


def _question(q: Question, counted: Sequence[GradeRow]) -> QuestionReport:
    marks = [m for r in counted for m in r.written if m.question == q.id]
    given = Counter(m.earned for m in marks if m.earned is not None)
    used = Counter(item.id for m in marks for item in m.items)
    return QuestionReport(
        q.id, q.title, q.points, len(marks),
        marked=sum(bool(m.marker) for m in marks),
        missing=sum(m.missing and not m.marker for m in marks),
        left=sum(m.earned is None for m in marks), flagged=sum(bool(m.flag) for m in marks),
        distribution=tuple(sorted((p, n) for p, n in given.items() if p is not None)),
        items=tuple(ItemUse(i.id, i.text, i.points, used[i.id]) for i in q.items))


def _homework(course: Course, assignment: str, all_rows: Sequence[GradeRow],
              counted: Sequence[GradeRow], students: Sequence[str],
              questions: Sequence[Question] = ()) -> HomeworkReport:
    a = course.assignment(assignment)
    statuses = Counter(display_status(r).value for r in counted)
    missing = len(students) - len(counted)
    if missing:
        statuses[Status.MISSING.value] = missing
    tiers = late_tiers(a.lecture_day, course.last_lecture_day, course.timezone,
                       course.deadline_time)
    labels = {t.cap: t.label for t in tiers}
    by_cap: dict[float | None, list[str]] = defaultdict(list)
    for r in counted:
        by_cap[r.cap].append(r.student)
    caps = sorted((c for c in by_cap if c is not None), reverse=True) + \
        ([None] if None in by_cap else [])
    seconds = [r.seconds for r in all_rows]
    timing = None if not seconds else Timing(len(seconds), statistics.median(seconds),
                                             max(seconds), sum(seconds))
    return HomeworkReport(
        id=a.id, title=a.title, required=a.required,
        raw=tuple(r.raw for r in counted),
        final=tuple(r.final for r in counted if r.final is not None),
        pending=sum(r.final is None for r in counted), missing=missing,
        statuses=tuple(sorted(statuses.items(), key=lambda kv: (-kv[1], kv[0]))),
        failed_checks=tuple(_failed_checks([r for r in counted if r.status in CHECKED])),
        not_checked=tuple(sorted(Counter(r.status.value for r in counted
                                         if r.status not in CHECKED).items())),
        late=tuple(LateGroup(_tier_label(c, labels), c, tuple(by_cap[c])) for c in caps),
        trouble=tuple(Trouble(r.student, r.status.value, STATUS_WORDS[r.status], r.detail)
                      for r in counted
                      if r.status not in RAN),
        timing=timing, questions=tuple(_question(q, counted) for q in questions),
        challenges=_leaderboards([r for r in counted if r.status in CHECKED]))


def build_report(course: Course, rows: Iterable[GradeRow], now: dt.datetime,
                 similarity: Sequence[HomeworkSimilarity] = (),
                 roster: Sequence[str] | None = None,
                 questions: Mapping[str, Sequence[Question]] | None = None) -> Report:
    """The report for ``rows`` as of ``now`` (aware). ``roster``: the students to report on
    besides those who submitted (default: the course's roster), as
    ``grader.output.tables.wide_table`` takes it;
    the pass counts are the CSV's (the same counted rows and ``grader.course.rules.passes``).
    ``questions``: each homework's written questions (``rows`` joined to their marks by
    ``grader.tools.marking.scored_rows``)."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now is a naive datetime ({now!r}); give it a time zone")
    rows = list(rows)
    counted = counted_rows(rows, course.counted)
    students = sorted({s for s, _ in counted} |
                      ({p.id for p in course.roster} if roster is None else set(roster)))
    homeworks = []
    for a in course.assignments:
        mine = [counted[(s, a.id)] for s in students if (s, a.id) in counted]
        graded = [r for r in rows if r.assignment == a.id]
        homeworks.append(_homework(course, a.id, graded, mine, students,
                                   (questions or {}).get(a.id, ())))
    return Report(
        course=course.name,
        made_at=f"{now.astimezone(course.timezone):%Y-%m-%d %H:%M} {course.timezone.key}",
        min_percent=course.pass_rule.min_percent, min_required=course.pass_rule.min_required,
        required=tuple(a.id for a in course.assignments if a.required),
        homeworks=tuple(homeworks),
        standings=tuple(standing(course, s, counted, now) for s in students),
        similarity=tuple(similarity))
