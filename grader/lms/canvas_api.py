"""Canvas's REST API, through canvasapi: the submission times of an assignment (``grader import
canvas --canvas``), and grades with a comment posted back (``grader push canvas``).

The calls (https://canvas.instructure.com/doc/api/): ``GET /api/v1/courses/:id``,
``GET /api/v1/courses/:id/assignments/:id``, ``GET .../assignments/:id/submissions`` (paginated;
``include[]=submission_history`` and ``user`` for the import) and, to post,
``PUT .../assignments/:id/submissions/:user_id`` with ``submission[posted_grade]`` and
``comment[text_comment]``. The token is read from ``CANVAS_API_TOKEN`` (never a command-line
argument, which other users of the machine can read) and travels only over HTTPS (plain HTTP
only to this machine, for a stand-in).

A push posts only where Canvas's grade differs from ours, one request per student, each carrying
the grade and its comment together; it decides from what Canvas holds when it runs, so a push
that stopped half-way and is run again posts only what is left.
"""

from __future__ import annotations

import datetime as dt
import os
import urllib.parse
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import canvasapi
import requests
from canvasapi.exceptions import CanvasException

from grader.course.config import Course
from grader.errors import LmsError
from grader.lms.canvas import Attempt, Times
from grader.lms.export import comment_markdown, points
from grader.lms.people import People
from grader.output.view import counted_rows
from grader.pipeline.discover import parse_timestamp
from grader.records import GradeRow

TOKEN_VARIABLE = "CANVAS_API_TOKEN"
_LOCAL = ("127.0.0.1", "localhost", "::1")
_UTC = ZoneInfo("UTC")


def connect(url: str) -> canvasapi.Canvas:
    """A client of the Canvas at ``url`` with the token of ``CANVAS_API_TOKEN``."""
    token = os.environ.get(TOKEN_VARIABLE, "").strip()
    if not token:
        raise LmsError(url, [f"no API token: set {TOKEN_VARIABLE} (Canvas: Account > Settings "
                             f"> New access token)"])
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in _LOCAL):
        raise LmsError(url, ["not an https:// address: the token would travel in clear"])
    with warnings.catch_warnings():  # plain HTTP is allowed to this machine only, above
        warnings.filterwarnings("ignore", "Canvas may respond unexpectedly", UserWarning)
        return canvasapi.Canvas(url, token)


@contextmanager
def _answers(what: str) -> Iterator[None]:
    try:
        yield
    except CanvasException as exc:
        raise LmsError(what, [f"Canvas refused: {type(exc).__name__}: {exc}"]) from None
    except requests.RequestException as exc:
        raise LmsError(what, [f"Canvas did not answer: {exc}"]) from None


def _time(text: object) -> dt.datetime | None:
    return parse_timestamp(str(text), _UTC) if text else None


def fetch_times(url: str, course_id: int, assignment_id: int) -> Times:
    """The submission times of Canvas assignment ``assignment_id``: each student's latest
    ``submitted_at`` and the time of each attempt's attachments (``submission_history``), the
    anonymous ids, and the users' emails where Canvas shows them."""
    what = f"{url} course {course_id} assignment {assignment_id}"
    canvas = connect(url)
    with _answers(what):
        assignment = canvas.get_course(course_id).get_assignment(assignment_id)
        submissions = list(assignment.get_submissions(include=["submission_history", "user"]))
    by_user: dict[str, Attempt] = {}
    anonymous: dict[str, str] = {}
    for sub in submissions:
        uid = str(sub.user_id)
        at: dict[str, dt.datetime | None] = {}
        for attempt in getattr(sub, "submission_history", None) or []:
            for attachment in attempt.get("attachments") or []:
                at[str(attachment["id"])] = _time(attempt.get("submitted_at"))
        latest = _time(getattr(sub, "submitted_at", None))
        for attachment in sub.attachments:
            at.setdefault(str(attachment.id), latest)
        user: dict[str, Any] = getattr(sub, "user", None) or {}
        by_user[uid] = Attempt(latest, bool(getattr(sub, "late", False)), at,
                               str(user.get("email") or ""))
        if getattr(sub, "anonymous_id", None):
            anonymous[str(sub.anonymous_id)] = uid
    return Times(f"Canvas API ({url}, assignment {assignment_id}; times in UTC)", by_user,
                 anonymous)


@dataclass(frozen=True)
class Change:
    """One grade to post: the student, their Canvas user id, the points Canvas holds now (None:
    no grade) and ours, and the comment posted with it."""

    student: str
    assignment: str
    canvas_assignment: int
    user_id: str
    current: float | None
    new: float
    comment: str


@dataclass(frozen=True)
class Plan:
    """What a push would post, and what it leaves: grades already equal, finals pending."""

    changes: tuple[Change, ...]
    unchanged: int
    pending: int
    notes: tuple[str, ...] = ()


class Push:
    """A push planned against what Canvas holds now; ``post`` carries it out."""

    def __init__(self, plan: Plan, submissions: dict[tuple[int, str], Any]) -> None:
        self.plan = plan
        self._submissions = submissions

    def post(self, posted: Callable[[Change], None]) -> int:
        """Post every change in turn (``posted`` is told after each); return how many."""
        done = 0
        for change in self.plan.changes:
            sub = self._submissions[(change.canvas_assignment, change.user_id)]
            with _answers(f"posting {change.student}'s {change.assignment} (posted {done} of "
                          f"{len(self.plan.changes)}; run the push again: it posts only what is "
                          f"left)"):
                sub.edit(submission={"posted_grade": f"{change.new:.2f}"},
                         comment={"text_comment": change.comment})
            done += 1
            posted(change)
        return done


def plan_push(course: Course, rows: Sequence[GradeRow], people: People,
              assignments: Sequence[str], url: str, course_id: int) -> Push:
    """Compare each counted final of ``assignments`` (points on the Canvas assignment's points
    possible) with the grade Canvas holds; plan to post where they differ."""
    canvas = connect(url)
    counted = counted_rows(rows, course.counted)
    changes: list[Change] = []
    held: dict[tuple[int, str], Any] = {}
    unchanged = pending = 0
    problems, notes = [], []
    for hw in assignments:
        target = course.lms.canvas_assignments[hw]
        with _answers(f"{url} course {course_id} assignment {target.id} ({hw})"):
            assignment = canvas.get_course(course_id).get_assignment(target.id)
            subs = {str(s.user_id): s for s in assignment.get_submissions()}
        possible = float(getattr(assignment, "points_possible", None) or 0.0)
        if possible <= 0:
            problems.append(f"{hw}: Canvas assignment {target.id} has no points possible")
            continue
        if abs(possible - target.points) > 1e-9:
            notes.append(f"{hw}: Canvas says {possible:g} points, course.toml {target.points:g}:"
                         f" Canvas's count")
        for (student, assignment_id), row in sorted(counted.items()):
            if assignment_id != hw:
                continue
            if row.final is None:
                pending += 1
                continue
            uid = people.lms_id(student)
            if not uid or uid not in subs:
                problems.append(f"{student} ({hw}): " + (
                    f"Canvas user {uid} is not in assignment {target.id}" if uid
                    else "no lms_id (Canvas user id) on the roster"))
                continue
            new = float(points(row.final, possible))
            score = getattr(subs[uid], "score", None)
            current = None if score is None else float(score)
            if current is not None and abs(current - new) < 0.005:
                unchanged += 1
                continue
            held[(target.id, uid)] = subs[uid]
            changes.append(Change(student, hw, target.id, uid, current, new,
                                  comment_markdown(row, course)))
    if problems:
        raise LmsError(f"push to {url}", problems)
    return Push(Plan(tuple(changes), unchanged, pending, tuple(notes)), held)
