"""``grader audit``: are a homework's hidden checks fair to a correct notebook and hard on a
wrong one?

Four parts, each a record in the report:

- **seeds**: the reference notebook runs once in a sandboxed kernel; its hidden checks run
  against it on many seeds (every check on the first ``slow_seeds``, the checks not marked
  ``slow_check`` on all ``seeds``). Every (seed, check, message) that lost a point is listed:
  a correct student graded on that seed would have lost it.
- **mutants**: mutants of the solution regions (``grader.tools.mutate``), drawn with the mutant
  seed, each graded like a submission (``grader.pipeline.grading.grade_notebook``, a fresh
  kernel each, ``jobs`` at a time). Killed: it lost a point. Survived: it kept every point
  (listed with its diff). Equivalent: listed in ``solutions/<hw>/audit_equivalent.toml`` with
  a reviewed reason, and not graded. Kill rate = killed / (drawn - equivalent), in percent.
- **template**: the student notebook, untouched, must earn 0.
- **constants**: the reference with ``solutions/<hw>/audit_constants.py`` appended as a last
  cell (every graded function returning the public checks' answers) must earn at most
  ``CONSTANTS_MAX_SHARE`` of the hidden points, and less than its share of the public ones.

A homework fails the audit (``HomeworkAudit.problems``) when the reference lost a point or did
not run, the kill rate is under ``[audit] min_kill_rate``, the template earned a point, the
constants version passed, or a mutant could not be graded.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.course.config import AUDIT_PARTS, Course
from grader.course.notebook import indexed_code_cells
from grader.errors import (
    AuditConfigError,
    ChecksConfigError,
    ConfigError,
    HarnessError,
    MutateError,
)
from grader.kernel import zygote
from grader.kernel.sandbox import use_sandbox
from grader.pipeline.checking import RunChecks, describe, serve_checks
from grader.pipeline.grading import grade_notebook, new_seed
from grader.pipeline.pool import worker_context
from grader.records import Limits, Status
from grader.tools.harness import checks_on, live_kernel, score, write_variant
from grader.tools.mutate import Mutant, notebook_mutants, sample

PARTS = AUDIT_PARTS
CONSTANTS_MAX_SHARE = 0.15  # of the hidden points, for the public answers returned as constants
EQUIVALENT_FILE = "audit_equivalent.toml"
CONSTANTS_FILE = "audit_constants.py"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Options:
    """What to run. ``None`` counts take the course's ``[audit]`` settings."""

    parts: tuple[str, ...] = PARTS
    seed: int | None = None  # first seed of the seeds part; the seed mutants are graded on
    seeds: int | None = None
    slow_seeds: int | None = None
    mutants: int | None = None
    mutant_seed: int | None = None
    mutant_ids: tuple[str, ...] = ()  # grade these mutants instead of a drawn sample
    jobs: int = 1


@dataclass(frozen=True)
class Loss:
    """A check that took points from the reference on one seed."""

    seed: int
    check: str
    outcome: str
    message: str


@dataclass(frozen=True)
class Seeds:
    first_seed: int
    seeds: int  # seeds run (fast checks)
    full_seeds: int  # of them, seeds on which every check ran
    fast_checks: tuple[str, ...]
    slow_checks: tuple[str, ...]
    losses: tuple[Loss, ...]
    seconds: float


@dataclass(frozen=True)
class MutantResult:
    id: str
    summary: str
    verdict: str  # "killed", "survived", "equivalent", "error"
    how: str  # killed: the status and the checks that failed; equivalent: the reviewed reason
    earned: float | None
    possible: float | None
    diff: str
    seconds: float


@dataclass(frozen=True)
class Mutants:
    mutant_seed: int
    grading_seed: int
    enumerated: int  # every mutant of the solution regions
    results: tuple[MutantResult, ...]
    stale: tuple[str, ...]  # ids in the equivalents file that no longer name a mutant

    def count(self, verdict: str) -> int:
        return sum(r.verdict == verdict for r in self.results)

    @property
    def kill_rate(self) -> float | None:
        """Percent of the drawn, non-equivalent mutants that lost a point (None if none)."""
        graded = len(self.results) - self.count("equivalent")
        return None if graded == 0 else 100.0 * self.count("killed") / graded


@dataclass(frozen=True)
class Graded:
    """A notebook's score under a set of checks (template, constants)."""

    earned: float
    possible: float
    status: str
    detail: str
    public_earned: float | None = None
    public_possible: float | None = None

    @property
    def share(self) -> float:
        """Fraction of the points earned (0..1)."""
        return self.earned / self.possible if self.possible else 0.0

    @property
    def public_share(self) -> float:
        """Fraction of the public checks' points earned (0..1; 0 when not run)."""
        return (self.public_earned or 0.0) / self.public_possible if self.public_possible \
            else 0.0


@dataclass(frozen=True)
class HomeworkAudit:
    assignment: str
    seeds: Seeds | None = None
    mutants: Mutants | None = None
    template: Graded | None = None
    constants: Graded | None = None
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuditReport:
    min_kill_rate: float
    homeworks: tuple[HomeworkAudit, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not any(h.problems for h in self.homeworks)

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        for hw, record in zip(data["homeworks"], self.homeworks, strict=True):
            if record.mutants is not None:
                hw["mutants"]["kill_rate"] = record.mutants.kill_rate
                for verdict in ("killed", "survived", "equivalent", "error"):
                    hw["mutants"][verdict] = record.mutants.count(verdict)
        data["ok"] = self.ok
        return json.dumps(data, indent=2) + "\n"


def load_equivalents(path: Path) -> dict[str, str]:
    """``{mutant id: reason}`` from a reviewed equivalents file (none if it does not exist).

    The file holds one table per mutant: ``[equivalent.<id>]`` with ``reason = "..."`` (required,
    not empty) and optionally ``change = "..."`` (what the mutant does, for the reader)."""
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as exc:
        raise AuditConfigError(f"{path}: cannot read it: {exc}") from exc
    unknown = sorted(set(data) - {"equivalent"})
    if unknown:
        raise AuditConfigError(f"{path}: {unknown[0]}: unknown key (expected [equivalent.<id>])")
    table = data.get("equivalent", {})
    if not isinstance(table, dict):
        raise AuditConfigError(f"{path}: equivalent: expected tables [equivalent.<id>]")
    found: dict[str, str] = {}
    for mutant_id, entry in table.items():
        where = f"{path}: equivalent.{mutant_id}"
        if not isinstance(entry, dict):
            raise AuditConfigError(f"{where}: expected a table with a reason")
        extra = sorted(set(entry) - {"reason", "change"})
        if extra:
            raise AuditConfigError(f"{where}.{extra[0]}: unknown key (reason, change)")
        reason = entry.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise AuditConfigError(f"{where}.reason: missing: say why no check can tell this "
                                   f"mutant from the reference")
        found[mutant_id] = reason.strip()
    return found


def audit(course: Course, assignments: Sequence[str], options: Options = Options(),
          progress: Progress | None = None) -> AuditReport:
    """Audit the hidden checks of each of ``assignments`` (default: every assignment with
    hidden checks). Raise AuditConfigError before any notebook runs when something it needs is
    missing or malformed."""
    report = progress or (lambda _: None)
    wanted = list(assignments) or [a.id for a in course.assignments
                                   if course.hidden_checks(a.id).is_dir()]
    unknown_parts = sorted(set(options.parts) - set(PARTS))
    if unknown_parts:
        raise AuditConfigError(f"unknown audit part(s): {', '.join(unknown_parts)} "
                               f"(known: {', '.join(PARTS)})")
    plans = [_plan(course, hw, options) for hw in wanted]  # every config error before any run
    return AuditReport(course.audit.min_kill_rate,
                       tuple(_audit_one(course, plan, options, report) for plan in plans))


@dataclass(frozen=True)
class _Plan:
    assignment: str
    checks: Path
    reference: Path
    fast: tuple[str, ...]
    slow: tuple[str, ...]
    equivalents: dict[str, str]
    all_mutants: tuple[Mutant, ...]
    chosen: tuple[Mutant, ...]
    mutant_seed: int
    seed: int


def _plan(course: Course, assignment: str, options: Options) -> _Plan:
    try:
        course.assignment(assignment)
        infos = describe(course.hidden_checks(assignment))
    except (ConfigError, ChecksConfigError) as exc:
        raise AuditConfigError(str(exc)) from None
    reference = course.reference_notebook(assignment)
    if not reference.exists():
        raise AuditConfigError(f"{reference}: no reference notebook for {assignment}")
    folder = course.hidden_checks(assignment).parent
    equivalents = load_equivalents(folder / EQUIVALENT_FILE)
    try:
        all_mutants = tuple(notebook_mutants(indexed_code_cells(reference), str(reference)))
    except MutateError as exc:
        raise AuditConfigError(str(exc)) from None
    by_id = {m.id: m for m in all_mutants}
    mutant_seed = course.audit.mutant_seed if options.mutant_seed is None else options.mutant_seed
    if options.mutant_ids:
        missing = [i for i in options.mutant_ids if i not in by_id]
        if missing:
            raise AuditConfigError(f"{reference}: no mutant {missing[0]!r} "
                                   f"(`grader audit {assignment} --list-mutants` lists them)")
        chosen = tuple(by_id[i] for i in dict.fromkeys(options.mutant_ids))
    else:
        count = course.audit.mutants if options.mutants is None else options.mutants
        chosen = tuple(sample(all_mutants, count, mutant_seed))
    return _Plan(assignment, course.hidden_checks(assignment), reference,
                 tuple(i.name for i in infos if not i.slow), tuple(i.name for i in infos if i.slow),
                 equivalents, all_mutants, chosen, mutant_seed,
                 new_seed() if options.seed is None else options.seed)


def list_mutants(course: Course, assignment: str) -> list[Mutant]:
    """Every mutant of ``assignment``'s reference notebook, in notebook order."""
    return list(_plan(course, assignment, Options(parts=(), mutants=0, seed=0)).all_mutants)


def drawn_mutants(course: Course, assignment: str, options: Options) -> list[Mutant]:
    """The mutants ``options`` would grade (its ids, or a draw with the mutant seed)."""
    return list(_plan(course, assignment, dataclasses.replace(options, seed=0)).chosen)


def _audit_one(course: Course, plan: _Plan, options: Options, report: Progress) -> HomeworkAudit:
    hw, limits = plan.assignment, course.limits
    problems: list[str] = []
    notes: list[str] = []
    seeds = mutants = template = constants = None
    report(f"[{hw}] seed {plan.seed} (`--seed {plan.seed}` repeats this run); "
           f"{len(plan.chosen)} of {len(plan.all_mutants)} mutants (mutant seed "
           f"{plan.mutant_seed})")
    with tempfile.TemporaryDirectory(prefix="grader-audit-") as tmp:
        work = Path(tmp)
        if "seeds" in options.parts:
            count = course.audit.seeds if options.seeds is None else options.seeds
            full = course.audit.slow_seeds if options.slow_seeds is None else options.slow_seeds
            try:
                seeds = _seeds(plan, limits, count, full, work, report)
            except HarnessError as exc:
                problems.append(f"the reference notebook cannot be graded: {exc}")
            else:
                if seeds.losses:
                    lost_seeds = sorted({loss.seed for loss in seeds.losses})
                    problems.append(f"the reference lost points on {len(lost_seeds)} of "
                                    f"{seeds.seeds} seeds (first: {lost_seeds[0]})")
        if "template" in options.parts:
            template = _template(course, plan, limits, report)
            if template.earned > 0:
                problems.append(f"the untouched template earned {template.earned:g} of "
                                f"{template.possible:g} points")
        if "constants" in options.parts:
            source_path = plan.checks.parent / CONSTANTS_FILE
            if not source_path.exists():
                notes.append(f"no constants version ({source_path}): part skipped")
            else:
                constants = _constants(course, plan, source_path, limits, work, report)
                if (constants.share > CONSTANTS_MAX_SHARE
                        or constants.share >= constants.public_share):
                    problems.append(
                        f"the public answers as constants earned {100 * constants.share:.1f} % "
                        f"of the hidden points ({100 * constants.public_share:.1f} % of the "
                        f"public ones)")
        if "mutants" in options.parts:
            mutants = _mutants(plan, limits, options, work, report)
            rate = mutants.kill_rate
            if rate is not None and rate < course.audit.min_kill_rate:
                problems.append(f"kill rate {rate:.1f} % is under {course.audit.min_kill_rate:g} %")
            if mutants.count("error"):
                problems.append(f"{mutants.count('error')} mutant(s) could not be graded")
            if mutants.stale:
                notes.append(f"stale entries in {EQUIVALENT_FILE}: {', '.join(mutants.stale)}")
    return HomeworkAudit(hw, seeds, mutants, template, constants, tuple(problems), tuple(notes))


def _seeds(plan: _Plan, limits: Limits, count: int, full: int, work: Path,
           report: Progress) -> Seeds:
    start = time.monotonic()
    total = max(count, full)
    ran = 0
    losses: list[Loss] = []
    notebook = shutil.copy(plan.reference, work / plan.reference.name)
    report(f"[{plan.assignment}] running the reference notebook")
    with live_kernel(Path(notebook), limits) as live:
        if live.execution.status is not Status.OK:
            raise HarnessError(f"{live.execution.status.value}: {live.execution.detail}")

        def one_seed(seed: int, run: RunChecks) -> None:
            nonlocal ran
            ran += 1
            for r in run(live.student, seed, "the reference's kernel is gone"):
                if r.earned < r.points:  # a challenge's partial points are a loss too
                    losses.append(Loss(seed, r.name, r.outcome.value, r.message))
                    report(f"[{plan.assignment}] seed {seed}: {r.name} lost "
                           f"{r.points - r.earned:g}: "
                           f"{r.message.splitlines()[0] if r.message else ''}")
            if ran % 10 == 0 or ran == total:
                report(f"[{plan.assignment}] seeds {ran}/{total} "
                       f"({'every check' if ran <= full else 'fast checks'}), "
                       f"{len(losses)} loss(es), {time.monotonic() - start:.0f} s")

        # one session of the checks for the seeds of every check, one for the fast ones
        every = [plan.seed + index for index in range(min(full, total))]
        fast = [plan.seed + index for index in range(len(every), total)] if plan.fast else []
        if every:
            serve_checks(plan.checks, every, one_seed)
        if fast:
            serve_checks(plan.checks, fast, one_seed, select=plan.fast)
    return Seeds(plan.seed, ran, min(full, ran), plan.fast, plan.slow, tuple(losses),
                 round(time.monotonic() - start, 1))


def _template(course: Course, plan: _Plan, limits: Limits, report: Progress) -> Graded:
    report(f"[{plan.assignment}] grading the untouched template")
    execution, run = grade_notebook(course.student_notebook(plan.assignment), plan.checks,
                                    limits, plan.seed)
    earned, possible = score(run.results)
    return Graded(earned, possible, execution.status.value, execution.detail)


def _constants(course: Course, plan: _Plan, source_path: Path, limits: Limits, work: Path,
               report: Progress) -> Graded:
    report(f"[{plan.assignment}] grading the reference with the public answers as constants")
    notebook = write_variant(plan.reference, work / "constants" / plan.reference.name,
                             appended=source_path.read_text(encoding="utf-8"))
    try:
        execution, (public, hidden) = checks_on(
            notebook, limits, plan.seed, course.public_checks(plan.assignment), plan.checks)
    except HarnessError as exc:
        return Graded(0.0, 0.0, "not_run", str(exc))
    (earned, possible), (public_earned, public_possible) = score(hidden), score(public)
    return Graded(earned, possible, execution.status.value, execution.detail, public_earned,
                  public_possible)


def _mutants(plan: _Plan, limits: Limits, options: Options, work: Path,
             report: Progress) -> Mutants:
    known = {m.id for m in plan.all_mutants}
    stale = tuple(sorted(set(plan.equivalents) - known))
    results: dict[str, MutantResult] = {}
    todo: list[tuple[Mutant, Path]] = []
    for m in plan.chosen:
        if m.id in plan.equivalents:
            results[m.id] = MutantResult(m.id, m.summary, "equivalent", plan.equivalents[m.id],
                                         None, None, m.diff(plan.reference.name), 0.0)
        else:
            path = write_variant(plan.reference, work / "mutants" / m.id / plan.reference.name,
                                 {m.cell: m.after})
            todo.append((m, path))
    for done, (m, result) in enumerate(_graded_mutants(todo, plan, limits, options.jobs), 1):
        results[m.id] = result
        report(f"[{plan.assignment}] mutant {done}/{len(todo)} {m.id}: {result.verdict} "
               f"({result.how.splitlines()[0][:80] if result.how else ''}), "
               f"{result.seconds:.0f} s")
    ordered = tuple(results[m.id] for m in plan.chosen)
    return Mutants(plan.mutant_seed, plan.seed, len(plan.all_mutants), ordered, stale)


def _graded_mutants(todo: list[tuple[Mutant, Path]], plan: _Plan, limits: Limits, jobs: int
                    ) -> Iterator[tuple[Mutant, MutantResult]]:
    if jobs <= 1:
        for m, path in todo:
            yield m, _verdict(m, plan, _grade(path, plan.checks, limits, plan.seed))
        return
    # as grader.pipeline.pool's workers: forks of a process that imported the engine once, each
    # forking its kernels from this run's one fork server (or, if that failed to start, its own)
    places = zygote.to_share(use_sandbox(limits)[0])
    with ProcessPoolExecutor(max_workers=jobs, mp_context=worker_context(),
                             initializer=zygote.share, initargs=(places,)) as pool:
        futures = {pool.submit(_grade, path, plan.checks, limits, plan.seed): m
                   for m, path in todo}
        for future in as_completed(futures):
            m = futures[future]
            try:
                graded = future.result()
            except Exception as exc:  # noqa: BLE001 - a dead worker costs one mutant
                graded = {"error": f"{type(exc).__name__}: {exc}"}
            yield m, _verdict(m, plan, graded)


def _grade(notebook: Path, checks: Path, limits: Limits, seed: int) -> dict[str, Any]:
    """Grade one mutant notebook (in a worker process): plain data back."""
    start = time.monotonic()
    try:
        execution, run = grade_notebook(notebook, checks, limits, seed)
    except Exception as exc:  # noqa: BLE001 - reported as this mutant's grader error
        return {"error": f"{type(exc).__name__}: {exc}", "seconds": time.monotonic() - start}
    results = run.results
    earned, possible = score(results)
    failed = [(r.name, r.outcome.value, r.message) for r in results if r.earned < r.points]
    return {"status": execution.status.value, "detail": execution.detail, "earned": earned,
            "possible": possible, "failed": failed, "seconds": time.monotonic() - start}


def _verdict(m: Mutant, plan: _Plan, graded: dict[str, Any]) -> MutantResult:
    diff = m.diff(plan.reference.name)
    seconds = round(graded.get("seconds", 0.0), 1)
    if "error" in graded:
        return MutantResult(m.id, m.summary, "error", graded["error"], None, None, diff, seconds)
    earned, possible = graded["earned"], graded["possible"]
    if earned >= possible:
        how = "" if graded["status"] == "ok" else f"{graded['status']}: {graded['detail']}"
        return MutantResult(m.id, m.summary, "survived", how, earned, possible, diff, seconds)
    lines = [f"{graded['status']}: {graded['detail']}"] if graded["status"] != "ok" else []
    lines += [f"{name} ({outcome}): {message.splitlines()[0] if message else ''}"
              for name, outcome, message in graded["failed"]]
    return MutantResult(m.id, m.summary, "killed", "\n".join(lines), earned, possible, diff,
                        seconds)


def write_json(report: AuditReport, path: Path) -> None:
    """Write the full report as JSON, atomically (a temporary file renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, delete=False,
                                     suffix=".tmp") as f:
        f.write(report.to_json())
    os.replace(f.name, path)
