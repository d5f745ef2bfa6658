"""Challenges: a check that measures a student's compressed model under a budget and scores it
on a curve (grader.records.ChallengeResult, the ``challenge`` fixture), kept in the gradebook."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from test_checking import _checks
from test_store import make_row

from grader.checks import once
from grader.kernel.protocol import Student, encode
from grader.pipeline.checking import Outcome, run_checks
from grader.pipeline.store import open_gradebook
from grader.records import ChallengeResult, CheckResult

CURVE = ChallengeResult(metric="held-out accuracy", unit="non-zero weights", budget=1000.0,
                        used=900.0, score=0.90, bar=0.95, baseline=0.80, reference=0.96)


@pytest.mark.parametrize(("changes", "fraction"), [
    ({"score": 0.95}, 1.0),  # at the bar: full points
    ({"score": 0.99}, 1.0),  # above it (better than the reference)
    ({"score": 0.875}, 0.5),  # half way from the baseline to the bar
    ({"score": 0.80}, 0.0),  # at the baseline
    ({"score": 0.10}, 0.0),
    ({"used": 1000.0}, 2 / 3),  # the whole budget is within it
    ({"used": 1001.0}, 0.0),  # one over: nothing, however accurate
    ({"used": 1001.0, "score": 1.0}, 0.0),
    ({"used": None, "score": None}, 0.0),
    ({"bar": 0.80, "baseline": 0.85, "score": 0.80}, 1.0),  # the reference no better than the
    ({"bar": 0.80, "baseline": 0.85, "score": 0.79}, 0.0),  # baseline: a step at the bar
])
def test_the_curve(changes, fraction):
    assert replace(CURVE, **changes).fraction == pytest.approx(fraction)


def test_the_summary_says_where_the_result_sits():
    text = CURVE.summary()
    assert "0.9000 with 900 of 1,000 non-zero weights" in text
    assert "full points at 0.9500" in text and "0.9600" in text and "0.8000" in text
    assert "67% of the points" in text
    assert "over the budget" in replace(CURVE, used=1001.0).summary()
    assert "nothing was measured" in replace(CURVE, used=None, score=None).summary()


CHECKS = '''
import pytest
from grader.records import ChallengeResult

def _result(used, score):
    return ChallengeResult(metric="accuracy", unit="weights", budget=100.0, used=used,
                           score=score, bar=0.9, baseline=0.5, reference=0.92)

@pytest.mark.points(4)
def test_challenge(student, challenge):
    used, score = student.call("compress")
    challenge.record(_result(used, score))
    assert used <= 100, f"{used} weights, over the budget of 100"
'''


def _student(used: float, score: float) -> Student:
    def transport(request_json: str, timeout: float) -> dict:
        return {"ok": True, "value": encode([used, score])}
    return Student(transport, call_timeout=1.0)


@pytest.mark.parametrize(("used", "score", "outcome", "earned"), [
    (100, 0.95, Outcome.PASSED, 4.0),
    (80, 0.7, Outcome.PASSED, 2.0),
    (80, 0.5, Outcome.FAILED, 0.0),  # at the baseline: a failure, with the curve as message
    (101, 0.99, Outcome.FAILED, 0.0),  # over budget: the check's own message
])
def test_a_challenge_check_earns_its_share_and_keeps_what_it_measured(tmp_path, used, score,
                                                                      outcome, earned):
    (result,) = run_checks(_checks(tmp_path, CHECKS), _student(used, score), seed=1)
    assert (result.outcome, result.earned) == (outcome, earned)
    assert result.challenge is not None
    assert (result.challenge.used, result.challenge.score) == (used, score)
    if used > 100:
        assert result.message == "101 weights, over the budget of 100"
    else:
        assert result.message == result.challenge.summary()


def test_a_check_without_a_challenge_is_all_or_nothing(tmp_path):
    folder = _checks(tmp_path, CHECKS.replace("    challenge.record(_result(used, score))\n", ""))
    (result,) = run_checks(folder, _student(80, 0.7), seed=1)
    assert (result.outcome, result.earned, result.challenge) == (Outcome.PASSED, 4.0, None)


def test_the_gradebook_keeps_a_challenges_result(tmp_path: Path):
    checks = (CheckResult("test_c", 6.0, Outcome.PASSED, CURVE.summary(), "title", "prune",
                          CURVE.fraction, CURVE),
              CheckResult("test_d", 2.0, Outcome.FAILED, "over", "", "",
                          challenge=replace(CURVE, used=None, score=None)))
    row = make_row(checks=checks)
    with open_gradebook(tmp_path / "gb.sqlite") as book:
        book.put(row)
        back = book.get(row.student, row.assignment, row.sha256)
        stored = book._db.execute("SELECT checks FROM grades").fetchone()[0]
    assert back == row and back.checks[0].earned == pytest.approx(4.0)
    assert json.loads(stored)[0]["challenge"]["reference"] == 0.96


def test_once_runs_the_graders_own_computation_once_per_key():
    calls = []
    for _ in range(3):
        assert once(("test_once", 1), lambda: calls.append(1) or 7) == 7
    assert once(("test_once", 2), lambda: calls.append(2) or 8) == 8
    assert calls == [1, 2]


def test_the_graders_own_run_is_not_the_submissions_time():
    import time

    from grader.kernel.protocol import Budget

    student = Student(lambda request, timeout: {"ok": True, "value": encode(None)},
                      call_timeout=1.0, budget=Budget(0.5))
    once(("test_paused", time.monotonic()), lambda: time.sleep(0.7), student)
    assert student.budget.remaining() > 0.3  # the 0.7 s of the grader's own run not counted
    time.sleep(0.6)
    assert student.budget.used_up()


# --- the leaderboard: the report, the class's page, the feedback --------------------------

def _challenge_row(student: str, used: float | None, score: float | None, earned_share: float,
                   budget: float = 1000.0):
    from rows import make_row

    from grader.records import Outcome as O

    result = replace(CURVE, used=used, score=score, budget=budget)
    passed = earned_share > 0
    check = CheckResult("test_hw2::test_prune_challenge", 6.0, O.PASSED if passed else O.FAILED,
                        result.summary(), "prunes the CNN to a budget", "prune_to_budget",
                        earned_share if passed else 1.0, result)
    return make_row(student, "hw2", checks=(check,), earned=6.0 * earned_share, possible=6.0)


def _class_rows():
    return [_challenge_row("alice", 950.0, 0.97, 1.0),
            _challenge_row("bob", 1000.0, 0.875, 0.5),
            _challenge_row("carol", 1200.0, 0.99, 0.0),  # best score, but over budget
            _challenge_row("dave", 600.0, 0.875, 0.5),  # bob's score with less of the budget
            _challenge_row("erin", None, None, 0.0)]


def _course():
    from rows import REPO_COURSE

    from grader.course.config import load_course
    return load_course(REPO_COURSE)


def _now():
    import datetime as dt
    return dt.datetime(2026, 12, 20, 12, 0, tzinfo=dt.UTC)


def test_equal_results_share_a_rank():
    from grader.tools.report import build_report

    rows = [_challenge_row("bob", 900.0, 0.875, 0.5), _challenge_row("dave", 900.0, 0.875, 0.5),
            _challenge_row("alice", 950.0, 0.97, 1.0)]
    (board,) = next(hw for hw in build_report(_course(), rows, _now()).homeworks
                    if hw.id == "hw2").challenges
    assert [(rank, e.student) for rank, e in board.ranked] == [
        (1, "alice"), (2, "bob"), (2, "dave")]


def test_the_report_ranks_each_challenge():
    from grader.tools.report import build_report

    report = build_report(_course(), _class_rows(), _now())
    (board,) = next(hw for hw in report.homeworks if hw.id == "hw2").challenges
    # bob and dave: the same share and score, dave with less of the budget; carol's best
    # score is over budget; erin's model could not be measured
    assert [(rank, e.student) for rank, e in board.ranked] == [
        (1, "alice"), (2, "dave"), (3, "bob"), (None, "carol"), (None, "erin")]
    assert board.budgets == (1000.0,) and board.unmeasured == 0
    assert (board.metric, board.unit) == ("held-out accuracy", "non-zero weights")


def test_a_check_that_measured_nothing_is_counted_apart():
    from rows import make_row

    from grader.records import Outcome as O
    from grader.tools.report import build_report

    rows = _class_rows() + [make_row("frank", "hw2", checks=(CheckResult(
        "test_hw2::test_prune_challenge", 6.0, O.FAILED, "prune_to_budget raised"),))]
    report = build_report(_course(), rows, _now())
    (board,) = next(hw for hw in report.homeworks if hw.id == "hw2").challenges
    assert board.unmeasured == 1 and "frank" not in [e.student for e in board.entries]


def test_the_report_page_shows_the_leaderboard_and_its_figure():
    from grader.tools.report_page import make_report, render_report

    page = render_report(make_report(_course(), _class_rows(), _now()))
    assert "Challenge: <code>prune_to_budget</code>" in page
    assert "<p>prunes the CNN to a budget</p>" in page
    assert "1,200 (over)" in page and "0.9700" in page
    assert 'alt="prune_to_budget: score against budget used"' in page


def test_the_public_page_names_no_student_and_shows_no_grade():
    from grader.output.view import public_name
    from grader.tools.report import build_report
    from grader.tools.report_page import public_report, render_public

    course = _course()
    report = public_report(build_report(course, _class_rows(), _now(), roster=()), "salt-1")
    page = render_public(report)
    for student in ("alice", "bob", "carol", "dave", "erin"):
        assert student not in page
        assert public_name("salt-1", student) in page
    for person in course.roster:
        assert person.name not in page and person.id not in page
    assert "pass table" not in page and "Similar code" not in page
    assert not report.standings and not report.similarity
    assert all(not hw.raw and not hw.trouble for hw in report.homeworks)
    # another gradebook's secret gives other pseudonyms: nobody can compute them from ids
    assert public_name("salt-2", "alice") != public_name("salt-1", "alice")


def test_feedback_tells_a_student_their_pseudonym():
    from grader.output.feedback import feedback_html, feedback_markdown
    from grader.output.view import public_name, view

    course = _course()
    row = _class_rows()[1]
    v = view(row, course, "salt-1")
    assert public_name("salt-1", "bob") in feedback_markdown(v)
    assert public_name("salt-1", "bob") in feedback_html(v)
    assert "partial" in feedback_markdown(v) and "50% of the points" in feedback_markdown(v)
    assert view(row, course).leaderboard_name == ""  # no secret, no pseudonym


def test_grader_report_public_writes_the_class_page(tmp_path):
    from click.testing import CliRunner
    from rows import REPO_COURSE

    from grader.cli.main import main

    book_path = tmp_path / "gradebook.sqlite"
    with open_gradebook(book_path) as book:
        for row in _class_rows():
            book.put(row)
        salt = book.public_salt()
    out = tmp_path / "leaderboard.html"
    result = CliRunner().invoke(main, ["report", "--public", "--course", str(REPO_COURSE),
                                       "--gradebook", str(book_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "1 challenge leaderboard(s), 5 result(s) under pseudonyms" in result.output
    page = out.read_text()
    assert "alice" not in page
    from grader.output.view import public_name
    assert public_name(salt, "alice") in page
    with open_gradebook(book_path) as book:
        assert book.public_salt() == salt  # made once, kept


@pytest.mark.kernel
def test_grader_check_shows_a_challenges_share(tmp_path):
    import nbformat
    from click.testing import CliRunner
    from written_course import write_course, write_submission

    from grader.cli.main import main

    course = write_course(tmp_path)
    public = tmp_path / "assignments" / "hw1" / "checks" / "test_hw1_public.py"
    public.write_text(public.read_text() + CHECKS.replace(
        'student.call("compress")', "(80, 0.7)").replace("def _result", "def _made"
    ).replace("_result(used", "_made(used"))
    reference = nbformat.read(course.reference_notebook("hw1"), as_version=4)
    notebook = write_submission(tmp_path / "mine", "me", reference)
    result = CliRunner().invoke(main, ["check", str(notebook), "--course", str(course.path)],
                                catch_exceptions=False)
    text = " ".join(result.output.split())
    assert "PART test_hw1_public::test_challenge (2 of 4 pt)" in text, text
    assert "accuracy 0.7000 with 80 of 100 weights" in text
    assert "1 passed, 1 with part of their points, 0 failed" in text
    assert result.exit_code == 1  # not every point: the student can do better
