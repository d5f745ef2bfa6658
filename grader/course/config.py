"""The course settings, read once from ``course.toml`` into a frozen, typed object.

Any unknown key, wrong type or impossible date is a ``ConfigError`` that names the file and the
key, so a typo never silently becomes a default.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from grader.course.rules import Extension, LatePolicy
from grader.errors import ConfigError, GraderError
from grader.records import Limits


@dataclass(frozen=True)
class Assignment:
    id: str
    title: str
    lecture_day: dt.date
    required: bool
    notebook: str  # file name of the notebook inside assignments/<id>/ and solutions/<id>/


@dataclass(frozen=True)
class PassRule:
    min_percent: float = 50.0
    min_required: int = 4


# the parts of `grader audit`, in the order it runs them (here, not in grader.tools.audit:
# the command line offers them without importing the audit's engine)
AUDIT_PARTS = ("seeds", "mutants", "template", "constants")


@dataclass(frozen=True)
class AuditSettings:
    """``[audit]``: what ``grader audit`` runs by default and what it demands."""

    min_kill_rate: float = 95.0  # percent of non-equivalent mutants that must lose a point
    seeds: int = 200  # seeds of the checks not marked slow_check
    slow_seeds: int = 10  # seeds of every check, slow ones included (the first ones drawn)
    mutants: int = 40  # mutants drawn per homework
    mutant_seed: int = 0  # seed of that draw


@dataclass(frozen=True)
class RosterEntry:
    """A student on the roster. ``lms_id``: the student's id in the course's LMS (Canvas: the
    user id; Moodle: the ID number), which ``grader import`` maps downloads by, beside the
    email."""

    id: str
    name: str = ""
    email: str = ""
    lms_id: str = ""


@dataclass(frozen=True)
class CanvasAssignment:
    """A homework's assignment in Canvas: its id (the number in its URL) and its points."""

    id: int
    points: float


@dataclass(frozen=True)
class LmsSettings:
    """``[lms]``: where the course's LMS is (``grader import``, ``export``, ``push``)."""

    canvas_url: str = ""  # https://canvas.example.edu
    canvas_course: int = 0  # the course id in Canvas URLs
    canvas_assignments: Mapping[str, CanvasAssignment] = field(default_factory=dict)


@dataclass(frozen=True)
class Course:
    """Everything ``course.toml`` says. Paths are absolute, resolved against its folder."""

    path: Path
    name: str
    timezone: ZoneInfo
    deadline_time: dt.time
    last_lecture_day: dt.date
    late_policy: LatePolicy
    pass_rule: PassRule
    limits: Limits
    assignments: tuple[Assignment, ...]
    counted: str = "latest"  # which of several submissions counts: "latest" or "best"
    roster: tuple[RosterEntry, ...] = ()
    extensions: Mapping[tuple[str, str], Extension] = field(default_factory=dict)
    # [similarity] threshold: a pair of submissions whose shared code is at least this fraction
    # (0..1) of either one's own code is listed in the report for a person to look at
    similarity_threshold: float = 0.5
    audit: AuditSettings = AuditSettings()
    lms: LmsSettings = LmsSettings()

    @property
    def root(self) -> Path:
        return self.path.parent

    def assignment(self, assignment_id: str) -> Assignment:
        for a in self.assignments:
            if a.id == assignment_id:
                return a
        known = ", ".join(a.id for a in self.assignments)
        raise ConfigError(f"{self.path}: no assignment {assignment_id!r} (known: {known})")

    def public_checks(self, assignment_id: str) -> Path:
        return self.root / "assignments" / assignment_id / "checks"

    def hidden_checks(self, assignment_id: str) -> Path:
        return self.root / "solutions" / assignment_id / "checks"

    def student_notebook(self, assignment_id: str) -> Path:
        return self.root / "assignments" / assignment_id / self.assignment(assignment_id).notebook

    def reference_notebook(self, assignment_id: str) -> Path:
        return self.root / "solutions" / assignment_id / self.assignment(assignment_id).notebook


_LIMIT_KEYS = {
    "cell_timeout_s": float, "notebook_timeout_s": float, "call_timeout_s": float,
    "checks_timeout_s": float, "judge_timeout_s": float, "kernel_start_s": float,
    "memory_mb": int, "cpu_s": int, "fsize_mb": int, "nproc": int, "max_output_chars": int,
    "max_reply_mb": int, "max_notebook_mb": int,
    "tmp_mb": int, "sandbox": str,
}
_SANDBOX_MODES = ("auto", "required", "off")


class _Reader:
    """Typed access to one TOML table, with errors that name the file and the dotted key."""

    def __init__(self, path: Path, table: Mapping[str, Any], where: str) -> None:
        self.path, self.table, self.where = path, table, where
        self.used: set[str] = set()

    def _err(self, key: str, problem: str) -> ConfigError:
        dotted = f"{self.where}.{key}" if self.where else key
        return ConfigError(f"{self.path}: {dotted}: {problem}")

    def get(self, key: str, kind: type, default: Any = ...) -> Any:
        self.used.add(key)
        if key not in self.table:
            if default is ...:
                raise self._err(key, "missing")
            return default
        value = self.table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self._err(key, f"expected {kind.__name__}, got {type(value).__name__} "
                                 f"{value!r}")
        return value

    def date(self, key: str) -> dt.date:
        value = self.get(key, object)
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return value
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                pass
        raise self._err(key, f"expected a date like 2026-02-03, got {value!r}")

    def sub(self, key: str, default_empty: bool = True) -> _Reader:
        table = self.get(key, dict, {} if default_empty else ...)
        return _Reader(self.path, table, f"{self.where}.{key}" if self.where else key)

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise self._err(unknown[0], "unknown key")


def _quote_line(path: Path, message: str) -> str:
    # tomllib names only a line and column; quote that line, and the table it is in.
    match = re.search(r"line (\d+)", message)
    if not match:
        return ""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    number = int(match.group(1))
    if not 1 <= number <= len(lines):
        return ""
    table = next((ln.strip() for ln in reversed(lines[:number]) if ln.strip().startswith("[")),
                 "the top level")
    return f"; in {table}, line {number}: {lines[number - 1].strip()!r}"


def load_course(path: Path) -> Course:
    """Read and check ``course.toml``."""
    path = Path(path).resolve()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}{_quote_line(path, str(exc))}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it: {exc}") from exc

    top = _Reader(path, data, "")
    course = top.sub("course", default_empty=False)
    name = course.get("name", str)
    tz_name = course.get("timezone", str, "Europe/Moscow")
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise course._err("timezone", f"unknown time zone {tz_name!r}") from None
    deadline_text = course.get("deadline_time", str, "11:59")
    try:
        deadline = dt.time.fromisoformat(deadline_text)
    except ValueError:
        deadline = None
    if deadline is None or deadline.tzinfo is not None or deadline.second or deadline.microsecond:
        raise course._err("deadline_time", f"expected HH:MM (a whole minute, no zone), "
                                           f"got {deadline_text!r}")
    policy_text = course.get("late_policy", str, "cap")
    try:
        policy = LatePolicy(policy_text)
    except ValueError:
        raise course._err("late_policy", f"expected 'cap' or 'scale', got {policy_text!r}") \
            from None
    last_lecture = course.date("last_lecture_day")
    counted = course.get("counted", str, "latest")
    if counted not in ("latest", "best"):
        raise course._err("counted", f"expected 'latest' or 'best', got {counted!r}")
    roster_name = course.get("roster", str, "")
    extensions_name = course.get("extensions", str, "")
    course.finish()

    rule = top.sub("pass_rule")
    pass_rule = PassRule(rule.get("min_percent", float, 50.0), rule.get("min_required", int, 4))
    rule.finish()
    if not 0.0 <= pass_rule.min_percent <= 100.0:
        raise rule._err("min_percent", f"must be a percent in 0..100, got {pass_rule.min_percent}")
    if pass_rule.min_required < 0:
        raise rule._err("min_required", f"must be 0 or more, got {pass_rule.min_required}")

    similarity = top.sub("similarity")
    similarity_threshold = similarity.get("threshold", float, 0.5)
    similarity.finish()
    if not 0.0 < similarity_threshold <= 1.0:
        raise similarity._err("threshold", f"must be a fraction in (0, 1], got "
                                           f"{similarity_threshold}")

    limits_table = top.sub("limits")
    limits = Limits(**{k: limits_table.get(k, kind, getattr(Limits(), k))
                       for k, kind in _LIMIT_KEYS.items()})
    limits_table.finish()
    if limits.sandbox not in _SANDBOX_MODES:
        raise limits_table._err("sandbox", f"expected one of {', '.join(_SANDBOX_MODES)}, "
                                           f"got {limits.sandbox!r}")
    for key in _LIMIT_KEYS:
        value = getattr(limits, key)
        if not isinstance(value, str) and value < 0:
            raise limits_table._err(key, f"must be 0 or more, got {value}")

    audit = _audit_settings(top.sub("audit"))
    lms_table = top.sub("lms")

    assignments: list[Assignment] = []
    for i, table in enumerate(top.get("assignment", list)):
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: assignment[{i}]: expected a table")
        reader = _Reader(path, table, f"assignment[{i}]")
        a = Assignment(reader.get("id", str), reader.get("title", str), reader.date("lecture_day"),
                       reader.get("required", bool, True), reader.get("notebook", str))
        reader.finish()
        if any(a.id == seen.id for seen in assignments):
            raise reader._err("id", f"repeats assignment {a.id!r}")
        if a.lecture_day > last_lecture:
            raise reader._err("lecture_day", f"{a.lecture_day} is after the last lecture day "
                                             f"{last_lecture}")
        assignments.append(a)
    top.finish()
    if not assignments:
        raise ConfigError(f"{path}: no [[assignment]] tables")
    ids = {a.id for a in assignments}
    roster = load_roster(path.parent / roster_name) if roster_name else ()
    extensions = load_extensions(path.parent / extensions_name, ids) if extensions_name else {}
    return Course(path, name, tz, deadline, last_lecture, policy, pass_rule, limits,
                  tuple(assignments), counted, roster, extensions, similarity_threshold, audit,
                  _lms_settings(lms_table, ids))


def _audit_settings(table: _Reader) -> AuditSettings:
    defaults = AuditSettings()
    settings = AuditSettings(**{key: table.get(key, type(value), value)
                                for key, value in defaults.__dict__.items()})
    table.finish()
    if not 0.0 <= settings.min_kill_rate <= 100.0:
        raise table._err("min_kill_rate", f"must be a percent in 0..100, got "
                                          f"{settings.min_kill_rate}")
    for key in ("seeds", "slow_seeds", "mutants"):
        if getattr(settings, key) < 0:
            raise table._err(key, f"must be 0 or more, got {getattr(settings, key)}")
    return settings


def _lms_settings(table: _Reader, assignments: set[str]) -> LmsSettings:
    url = table.get("canvas_url", str, "")
    course = table.get("canvas_course", int, 0)
    mapped = table.sub("canvas_assignments")
    found: dict[str, CanvasAssignment] = {}
    for hw in list(mapped.table):
        if hw not in assignments:
            raise mapped._err(hw, f"no assignment {hw!r} in this course")
        entry = mapped.sub(hw, default_empty=False)
        found[hw] = CanvasAssignment(entry.get("id", int), entry.get("points", float))
        entry.finish()
        if found[hw].id <= 0 or found[hw].points <= 0:
            raise mapped._err(hw, "id and points must be positive")
    table.finish()
    if url and not url.startswith(("https://", "http://")):
        raise table._err("canvas_url", f"expected https://..., got {url!r}")
    return LmsSettings(url.rstrip("/"), course, found)


def csv_rows(path: Path, required: tuple[str, ...], error: type[GraderError] = ConfigError,
             what: str = "", hint: str = "") -> list[tuple[int, dict[str, str]]]:
    """The rows of the CSV file at ``path`` with their line numbers, every value a string
    (empty when blank) stripped of surrounding blanks; a missing ``required`` column, a missing
    or unreadable file is ``error`` naming the file (``what``: why it was read, after "file not
    found"; ``hint``: what to do about a missing column)."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                expected = ", ".join(required)
                raise error(f"{path}: missing column(s) {', '.join(missing)} "
                            f"{hint or f'in the header (expected {expected})'}")
            return [(reader.line_num, {k: (v or "").strip() for k, v in row.items() if k})
                    for row in reader]
    except FileNotFoundError:
        raise error(f"{path}: file not found{f' ({what})' if what else ''}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise error(f"{path}: cannot read it: {exc}") from exc


def load_roster(path: Path) -> tuple[RosterEntry, ...]:
    """A roster CSV with columns ``student,name,email`` and optionally ``lms_id`` (the
    student's id in the LMS, which ``grader import`` maps downloads by); all but ``student``
    may be empty. An LMS id listed for two students is an error."""
    students: dict[str, RosterEntry] = {}
    for line, row in csv_rows(path, ("student",), what="named in course.toml"):
        sid = row["student"]
        if not sid:
            raise ConfigError(f"{path}, line {line}: empty student id")
        if sid in students:
            raise ConfigError(f"{path}, line {line}: student {sid!r} listed twice")
        entry = RosterEntry(sid, row.get("name", ""), row.get("email", ""), row.get("lms_id", ""))
        twin = next((s.id for s in students.values() if entry.lms_id == s.lms_id != ""), None)
        if twin is not None:
            raise ConfigError(f"{path}, line {line}: lms_id {entry.lms_id!r} of {sid!r} is "
                              f"also {twin!r}'s")
        students[sid] = entry
    return tuple(students[s] for s in sorted(students))


_DURATION = re.compile(r"^(?:(\d+)d)?\s*(?:(\d+)h)?\s*(?:(\d+)m)?$")


def parse_extension(text: str) -> Extension:
    """``48h``, ``2d``, ``1d 12h``, ``90m`` (extra time) or ``2026-11-10`` (a new lecture day)."""
    text = text.strip()
    try:
        return Extension(new_base_date=dt.date.fromisoformat(text))
    except ValueError:
        pass
    match = _DURATION.match(text)
    if not text or not match:
        raise ValueError(f"expected extra time like 48h, 2d or 1d 12h, or a date like "
                         f"2026-11-10, got {text!r}")
    days, hours, minutes = (int(g or 0) for g in match.groups())
    return Extension(extra=dt.timedelta(days=days, hours=hours, minutes=minutes))


def load_extensions(path: Path, assignments: set[str]) -> dict[tuple[str, str], Extension]:
    """An extensions CSV with columns ``student,assignment,extension``."""
    found: dict[tuple[str, str], Extension] = {}
    for line, row in csv_rows(path, ("student", "assignment", "extension"),
                               what="named in course.toml"):
        key = (row["student"], row["assignment"])
        if row["assignment"] not in assignments:
            raise ConfigError(f"{path}, line {line}: unknown assignment {row['assignment']!r}")
        if key in found:
            raise ConfigError(f"{path}, line {line}: a second extension for {key[0]} {key[1]}")
        try:
            found[key] = parse_extension(row["extension"])
        except ValueError as exc:
            raise ConfigError(f"{path}, line {line}: {exc}") from None
    return found
