"""The check stage: points markers, verdicts and messages, seeded draws."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grader.kernel.protocol import Student, encode
from grader.pipeline.checking import (
    ChecksConfigError,
    Outcome,
    collect,
    describe,
    run_checks,
    serve_checks,
)


def _fake_student(**functions) -> Student:
    """A Student whose 'kernel' is a dict of local functions taking plain arguments."""

    def transport(request_json: str, timeout: float) -> dict:
        request = json.loads(request_json)
        fn = functions.get(request["name"])
        if fn is None:
            return {"ok": False, "error": f"NameError: {request['name']}"}
        try:
            return {"ok": True, "value": encode(fn(*request["args"], **request["kwargs"]))}
        except Exception as exc:  # noqa: BLE001
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

    return Student(transport, call_timeout=1.0)


def _checks(tmp_path: Path, source: str, name: str = "test_hw.py") -> Path:
    folder = tmp_path / "checks"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(source)
    return folder


CHECKS = '''
import pytest

@pytest.mark.points(3)
def test_double(student, rng):
    n = rng.randint(10, 10**6)
    assert student.call("double", n) == 2 * n, f"double({n}) should be {2 * n}"

@pytest.mark.points(1)
def test_bare_assert(student):
    assert student.call("double", 1) == 3

@pytest.mark.points(2)
def test_student_raises(student):
    student.call("crash")

@pytest.mark.points(1.5)
def test_broken_check(student):
    {}["missing"]

@pytest.mark.points(1)
def test_draw(student, rng, grading_seed):
    assert student.call("record", rng.random(), grading_seed) is None
'''


def test_verdicts_points_and_messages(tmp_path):
    def crash():
        raise ZeroDivisionError("division by zero")

    student = _fake_student(double=lambda n: 2 * n, crash=crash, record=lambda *a: None)
    results = {r.name: r for r in run_checks(_checks(tmp_path, CHECKS), student, seed=1)}
    assert results["test_hw::test_double"].outcome is Outcome.PASSED
    assert results["test_hw::test_double"].earned == 3
    bare = results["test_hw::test_bare_assert"]
    assert bare.outcome is Outcome.FAILED and bare.earned == 0
    assert bare.message.startswith("assert 2 == 3")
    raised = results["test_hw::test_student_raises"]
    assert raised.outcome is Outcome.FAILED
    assert ") raised ZeroDivisionError: division by zero" in raised.message
    assert raised.message.startswith("crash(")
    broken = results["test_hw::test_broken_check"]
    assert broken.outcome is Outcome.ERROR and "KeyError" in broken.message
    assert broken.points == 1.5


def test_failure_message_is_the_checks_words(tmp_path):
    student = _fake_student(double=lambda n: n)
    (result, *_) = [r for r in run_checks(_checks(tmp_path, CHECKS), student, seed=1)
                    if r.name.endswith("test_double")]
    assert result.message.startswith("double(") and "should be" in result.message
    assert "where" not in result.message  # pytest's own explanation is left out


def test_draws_depend_on_the_seed_and_repeat_with_it(tmp_path):
    seen: list[tuple[float, int]] = []
    student = _fake_student(double=lambda n: 2 * n, crash=lambda: None,
                            record=lambda x, seed: seen.append((x, seed)))
    folder = _checks(tmp_path, CHECKS)
    for seed in (1, 1, 2):
        run_checks(folder, student, seed=seed)
    assert seen[0] == seen[1] and seen[0][1] == 1
    assert seen[2][0] != seen[0][0] and seen[2][1] == 2


def test_without_a_kernel_every_check_fails_with_the_reason(tmp_path):
    results = run_checks(_checks(tmp_path, CHECKS), None, seed=1, unavailable="not run: timeout")
    assert len(results) == 5
    assert all(r.outcome is Outcome.FAILED and r.message == "not run: timeout" for r in results)


@pytest.mark.parametrize("marker", ["", "@pytest.mark.points(0)", "@pytest.mark.points(-1)",
                                    "@pytest.mark.points(True)", "@pytest.mark.points('2')",
                                    "@pytest.mark.points"])
def test_a_check_without_valid_points_stops_the_run(tmp_path, marker):
    source = f"import pytest\n\n{marker}\ndef test_unweighted(student):\n    pass\n"
    folder = _checks(tmp_path, CHECKS + "\n" + source.replace("import pytest\n", ""))
    with pytest.raises(ChecksConfigError, match="test_unweighted"):
        collect(folder)
    with pytest.raises(ChecksConfigError):
        run_checks(folder, None, seed=1)


def test_a_check_file_that_fails_to_import_stops_the_run(tmp_path):
    folder = _checks(tmp_path, "import no_such_module\n")
    with pytest.raises(ChecksConfigError, match="fail to load"):
        collect(folder)


def test_an_empty_or_missing_checks_folder_stops_the_run(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ChecksConfigError, match="no checks"):
        collect(tmp_path / "empty")
    with pytest.raises(ChecksConfigError, match="no checks folder"):
        collect(tmp_path / "absent")


def test_collect_returns_points_per_check(tmp_path):
    points = collect(_checks(tmp_path, CHECKS))
    assert points == {"test_hw::test_double": 3.0, "test_hw::test_bare_assert": 1.0,
                      "test_hw::test_student_raises": 2.0, "test_hw::test_broken_check": 1.5,
                      "test_hw::test_draw": 1.0}


def test_a_warning_inside_a_check_is_not_a_failure(tmp_path):
    # this suite runs with warnings as errors; a library warning in a check must not fail it
    source = ("import warnings\nimport pytest\n\n@pytest.mark.points(1)\n"
              "def test_warns(student):\n    warnings.warn('deprecated thing', UserWarning)\n"
              "    assert student.call('double', 2) == 4\n")
    results = run_checks(_checks(tmp_path, source), _fake_student(double=lambda n: 2 * n), 1)
    assert [r.outcome for r in results] == [Outcome.PASSED]


def test_select_runs_only_the_named_checks(tmp_path):
    calls: list[int] = []
    student = _fake_student(double=lambda n: calls.append(n) or 2 * n, record=lambda *a: None)
    folder = _checks(tmp_path, CHECKS)
    results = run_checks(folder, student, seed=1, select={"test_hw::test_double"})
    assert [(r.name, r.outcome) for r in results] == [("test_hw::test_double", Outcome.PASSED)]
    assert len(calls) == 1  # test_bare_assert, which also calls double, did not run
    none = run_checks(folder, None, seed=1, select=["test_hw::test_draw"])
    assert [r.name for r in none] == ["test_hw::test_draw"]
    with pytest.raises(ChecksConfigError, match="test_hw::test_nothing"):
        run_checks(folder, student, seed=1, select=["test_hw::test_nothing"])


def test_describe_names_points_slowness_and_title(tmp_path):
    source = ('import pytest\n\n@pytest.mark.slow_check\n@pytest.mark.points(2)\n'
              'def test_trains(student):\n    """Accuracy after fine-tuning >= 0.9.\n\n'
              '    More words.\n    """\n\n@pytest.mark.points(1)\ndef test_quick(student):\n'
              '    pass\n')
    infos = {i.name: i for i in describe(_checks(tmp_path, source))}
    assert infos["test_hw::test_trains"].slow and infos["test_hw::test_trains"].points == 2
    assert infos["test_hw::test_trains"].title == "Accuracy after fine-tuning >= 0.9."
    quick = infos["test_hw::test_quick"]
    assert not quick.slow and quick.title == "test_hw::test_quick"  # no docstring: its name


SESSION_CHECKS = '''
import pytest

SEEN = []


@pytest.fixture(scope="session")
def doubled(student):
    SEEN.append("setup")
    yield student.call("double", 21)
    SEEN.append("teardown")


@pytest.mark.points(1)
def test_shared(doubled):
    assert doubled == 42, "double(21) should be 42"


@pytest.mark.points(1)
def test_again(student, doubled, rng, grading_seed):
    assert student.call("record", rng.random(), grading_seed) is None
    assert SEEN.count("setup") == SEEN.count("teardown") + 1, "one live fixture per student"
'''


def test_one_session_serves_many_students_each_with_its_own_fixtures(tmp_path):
    seen: list[tuple[float, int]] = []
    right = _fake_student(double=lambda n: 2 * n, record=lambda x, s: seen.append((x, s)))
    wrong = _fake_student(double=lambda n: n, record=lambda x, s: seen.append((x, s)))
    verdicts: dict[str, tuple] = {}
    jobs = [("right", right, 1), ("wrong", wrong, 1), ("right again", right, 2),
            ("no kernel", None, 3)]

    def grade(job, run):
        name, student, seed = job
        verdicts[name] = run(student, seed, "not run: no kernel")

    serve_checks(_checks(tmp_path, SESSION_CHECKS), jobs, grade)
    outcome = {name: [r.outcome for r in results] for name, results in verdicts.items()}
    assert outcome["right"] == outcome["right again"] == [Outcome.PASSED, Outcome.PASSED]
    assert outcome["wrong"] == [Outcome.PASSED, Outcome.FAILED]  # test_again, test_shared
    assert [r.message for r in verdicts["no kernel"]] == ["not run: no kernel"] * 2
    # the same draw for the same seed, another for another seed; one fixture per student
    assert seen[0] == seen[1] and seen[2] != seen[0] and len(seen) == 3


def test_an_error_while_serving_stops_and_is_raised(tmp_path):
    def grade(job, run):
        raise RuntimeError(f"the grader broke on {job}")

    with pytest.raises(RuntimeError, match="broke on 1"):
        serve_checks(_checks(tmp_path, CHECKS), [1, 2], grade)


CACHING_CHECKS = '''
import pytest

_RESULTS = {}  # a module-level cache keyed by the run's seed: wrong once many students share it


@pytest.mark.points(1)
def test_cached(student, grading_seed):
    if grading_seed not in _RESULTS:
        _RESULTS[grading_seed] = student.call("double", 21)
    assert _RESULTS[grading_seed] == 42, "double(21) should be 42"
'''


def test_module_state_of_one_student_never_reaches_the_next(tmp_path):
    right = _fake_student(double=lambda n: 2 * n)
    wrong = _fake_student(double=lambda n: n)
    outcomes: list[Outcome] = []
    serve_checks(_checks(tmp_path, CACHING_CHECKS), [right, wrong, right],
                 lambda student, run: outcomes.extend(r.outcome for r in run(student, 7, "")))
    assert outcomes == [Outcome.PASSED, Outcome.FAILED, Outcome.PASSED]


def test_a_title_shows_the_constants_it_names_by_value():
    from grader.pipeline.checking import check_title

    constants = {"MIN_ACCURACY": 0.95, "BUDGET_RANGE": (7000, 9200), "CNN_CHANNELS": (16, 32, 64),
                 "STEPS_MAX": 1200, "NAME_OF": "text", "CNN": (1, 2)}
    doc = ("Accuracy >= MIN_ACCURACY at a budget in BUDGET_RANGE bytes, CNN_CHANNELS channels,\n"
           "at most STEPS_MAX steps; NAME_OF and CNN stay.\n\nMore.")
    assert check_title(doc, constants) == (
        "Accuracy >= 0.95 at a budget in 7,000 to 9,200 bytes, (16, 32, 64) channels, at most "
        "1,200 steps; NAME_OF and CNN stay.")


def test_no_homework_title_names_a_constant_of_its_check_file():
    # the student reads the title (feedback, `make check`), never the check file
    import re

    from conftest import REPO

    for folder in sorted(REPO.glob("*/hw*/checks")):
        for info in describe(folder):
            names = set(re.findall(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]*[A-Z0-9]\b", info.title))
            source = "".join(p.read_text() for p in folder.glob("*.py"))
            defined = {n for n in names if re.search(rf"^{n}\b.*=", source, re.M)}
            assert not defined, f"{folder}: {info.name}'s title names {sorted(defined)}"
