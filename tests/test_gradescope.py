"""The Gradescope autograder: the bundle is what Gradescope asks for, byte for byte the same each
time; unpacked into a stand-in for /autograder, its setup.sh installs it and its
run_autograder writes a results.json in Gradescope's documented format, with the hidden checks,
the late rule, and nothing of the checks beyond our feedback."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sysconfig
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import REPO, write_notebook
from test_kit_venv import clean_env, share_packages
from test_pipeline import COURSE as TINY_COURSE

from grader.cli.main import main
from grader.course.config import load_course
from grader.errors import ChecksConfigError
from grader.ship.gradescope.bundle import bundle_files, write_bundle

CHECKS = '''
import pytest

SECRET_SHIFT = 918273  # part of a hidden input: never to be seen in results.json


@pytest.mark.points(2)
def test_double(student, rng):
    """double(n) returns twice n, for a large n."""
    n = rng.randrange(1000) + SECRET_SHIFT
    assert student.call("double", n) == 2 * n, "double(n) should be 2 n for every n"


@pytest.mark.points(1)
def test_double_zero(student):
    """double(0) is 0."""
    assert student.call("double", 0) == 0, "double(0) should be 0"
'''

COURSE = TINY_COURSE + '''
[[assignment]]
id = "hw2"
title = "Tripling"
lecture_day = 2026-11-10
notebook = "hw2.ipynb"
'''

# Gradescope's documented results.json fields (gradescope-autograders.readthedocs.io, specs)
TOP_KEYS = {"score", "execution_time", "output", "visibility", "stdout_visibility",
            "extra_data", "tests", "leaderboard"}
TEST_KEYS = {"score", "max_score", "name", "number", "output", "tags", "visibility",
             "extra_data"}
VISIBILITY = {"hidden", "after_due_date", "after_published", "visible"}


def validate(data: dict) -> None:
    """A small schema check of results.json against the fields Gradescope documents."""
    assert set(data) <= TOP_KEYS, set(data) - TOP_KEYS
    assert isinstance(data["score"], int | float) and data["score"] >= 0
    assert isinstance(data["output"], str)
    assert isinstance(data.get("execution_time", 0), int)
    assert data["visibility"] in VISIBILITY and data["stdout_visibility"] in VISIBILITY
    for test in data["tests"]:
        assert set(test) <= TEST_KEYS, set(test) - TEST_KEYS
        assert {"name", "score", "max_score", "output", "visibility"} <= set(test)
        assert isinstance(test["name"], str) and test["name"]
        assert isinstance(test["output"], str) and isinstance(test["number"], str)
        assert isinstance(test["score"], int | float) and isinstance(test["max_score"],
                                                                      int | float)
        assert 0 <= test["score"] <= test["max_score"]
        assert test["visibility"] in VISIBILITY


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gradescope") / "course"
    for hw in ("hw1", "hw2"):
        checks = root / "solutions" / hw / "checks"
        checks.mkdir(parents=True)
        (checks / f"test_{hw}.py").write_text(CHECKS)
    write_notebook(root / "solutions" / "hw1" / "hw1.ipynb", "def double(n):\n    return 2 * n")
    shutil.copytree(REPO / "assignments" / "nncourse", root / "assignments" / "nncourse",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (root / "course.toml").write_text(COURSE)
    return root / "course.toml"


@pytest.fixture(scope="module")
def bundle(course, tmp_path_factory) -> Path:
    return write_bundle(load_course(course), "hw1",
                        tmp_path_factory.mktemp("out") / "hw1.zip").path


def test_the_bundle_holds_what_gradescope_needs_and_no_more(course, bundle):
    archive = zipfile.ZipFile(bundle)
    names = archive.namelist()
    assert names == sorted(names)
    modes = {info.filename: info.external_attr >> 16 for info in archive.infolist()}
    assert stat.S_IMODE(modes["setup.sh"]) == 0o755
    assert stat.S_IMODE(modes["run_autograder"]) == 0o755
    assert "solutions/hw1/checks/test_hw1.py" in names
    assert "grader/ship/gradescope/runner.py" in names
    assert "assignments/nncourse/weights/cnn_16_32_64.pt" in names
    # no reference notebook, no other homework
    assert not [n for n in names if n.endswith(".ipynb") or "hw2" in n]
    settings = json.loads(archive.read("autograder.json"))
    assert settings == {"assignment": "hw1", "visibility": "after_due_date"}

    unpacked = bundle.parent / "unpacked"
    archive.extractall(unpacked)
    bundled = load_course(unpacked / "course.toml")
    assert [a.id for a in bundled.assignments] == ["hw1"]
    assert bundled.limits == load_course(course).limits
    for script in ("setup.sh", "run_autograder"):
        assert subprocess.run(["bash", "-n", str(unpacked / script)]).returncode == 0
    pins = archive.read("requirements.txt").decode().splitlines()
    assert "torch==2.13.0" in pins
    assert all(line.count("==") == 1 for line in pins)
    assert not [p for p in pins if p.startswith(("nncourse", "ruff", "mypy", "dask"))]
    setup = archive.read("setup.sh").decode()
    assert setup.index("torch==2.13.0") < setup.index("requirements.txt")


def test_the_same_course_gives_the_same_bundle(course, bundle, tmp_path):
    again = write_bundle(load_course(course), "hw1", tmp_path / "again.zip").path
    assert again.read_bytes() == bundle.read_bytes()


def test_bad_requests_are_usage_errors(course, tmp_path):
    def grader(*args: str) -> int:
        return CliRunner().invoke(main, ["gradescope", *args, "--course", str(course)]).exit_code

    assert grader("hw9", str(tmp_path / "a.zip")) == 2
    assert grader("hw1", str(tmp_path / "a.tar")) == 2
    assert grader("hw1", str(tmp_path / "a.zip"), "--visibility", "sometimes") == 2
    assert grader("hw1", str(tmp_path / "a.zip")) == 0
    assert grader("hw1", str(tmp_path / "a.zip")) == 2  # exists
    assert grader("hw1", str(tmp_path / "a.zip"), "--force", "--visibility", "visible") == 0
    assert json.loads(zipfile.ZipFile(tmp_path / "a.zip").read("autograder.json"))[
        "visibility"] == "visible"
    with pytest.raises(ChecksConfigError, match="without a positive"):
        (course.parent / "solutions" / "hw2" / "checks" / "test_bad.py").write_text(
            "def test_no_points():\n    pass\n")
        try:
            bundle_files(load_course(course), "hw2")
        finally:
            (course.parent / "solutions" / "hw2" / "checks" / "test_bad.py").unlink()


@pytest.fixture(scope="module")
def autograder(bundle, tmp_path_factory) -> Path:
    """A stand-in for /autograder: the bundle in source/, run_autograder beside it, and
    setup.sh run there (apt-get replaced by a stub; the virtual environment given this test
    run's packages, so that pip finds every pinned requirement satisfied)."""
    root = tmp_path_factory.mktemp("autograder")
    zipfile.ZipFile(io.BytesIO(bundle.read_bytes())).extractall(root / "source")
    for script in ("setup.sh", "run_autograder"):
        (root / "source" / script).chmod(0o755)
    shutil.copy(root / "source" / "run_autograder", root / "run_autograder")
    stubs = root.parent / "stubs"
    stubs.mkdir()
    (stubs / "apt-get").write_text(f"#!/bin/sh\necho \"$@\" >> {stubs / 'apt.log'}\n")
    (stubs / "apt-get").chmod(0o755)
    subprocess.run(["python3", "-m", "venv", str(root / "venv")], check=True, env=clean_env())
    (site,) = (root / "venv" / "lib").glob("python*/site-packages")
    share_packages(Path(sysconfig.get_paths()["purelib"]), site)
    env = {**clean_env(), "AUTOGRADER_ROOT": str(root), "PIP_NO_COMPILE": "1",
           "PATH": f"{stubs}{os.pathsep}{clean_env()['PATH']}",
           # a satisfied requirement is never fetched: an index that does not exist proves it
           "TORCH_INDEX": f"file://{root.parent / 'no-such-index'}"}
    done = subprocess.run(["bash", str(root / "source" / "setup.sh")], env=env, text=True,
                          capture_output=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "bubblewrap" in (stubs / "apt.log").read_text()
    assert "bundle of hw1: 2 checks load" in done.stdout
    return root


def run_autograder(root: Path, notebook: str | None, created_at: str | None
                   ) -> tuple[dict, subprocess.CompletedProcess[str]]:
    shutil.rmtree(root / "submission", ignore_errors=True)
    shutil.rmtree(root / "results", ignore_errors=True)
    (root / "submission").mkdir()
    if notebook is not None:
        write_notebook(root / "submission" / "hw1.ipynb", notebook)
    metadata = {"id": 1, "assignment": {"title": "hw1"}, "users": [{"id": 7, "name": "S"}]}
    if created_at is not None:
        metadata["created_at"] = created_at
    (root / "submission_metadata.json").write_text(json.dumps(metadata))
    done = subprocess.run([str(root / "run_autograder")], cwd=root, text=True,
                          capture_output=True, timeout=600,
                          env={**clean_env(), "AUTOGRADER_ROOT": str(root)})
    text = (root / "results" / "results.json").read_text()
    assert "SECRET_SHIFT" not in text and "rng.randrange" not in text  # no check code
    data = json.loads(text)
    validate(data)
    return data, done


@pytest.mark.kernel
def test_run_autograder_grades_with_the_hidden_checks_and_the_late_rule(autograder):
    # correct, but handed in a day late: every check passes, the 75 % cap holds the score
    data, done = run_autograder(autograder, "def double(n):\n    return 2 * n",
                                "2026-11-05T10:00:00.000000+03:00")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"engine at {autograder / 'source' / 'grader'}" in done.stdout  # the bundle's own
    tests = {t["name"]: t for t in data["tests"]}
    # each check by the function it checks and its title
    assert set(tests) == {"double: double(n) returns twice n, for a large n.",
                          "double: double(0) is 0."}
    assert sum(t["score"] for t in data["tests"]) == 3.0
    assert data["score"] == 2.25  # min(100 %, 75 %) of 3 points
    assert "cap is 75 %" in data["output"] and "Notebook: ok" in data["output"]

    # wrong for large n, on time: the score is the sum of the checks' scores
    data, done = run_autograder(autograder, "def double(n):\n    return 2 * n if n < 1000 "
                                            "else n", "2026-11-04T10:00:00+03:00")
    assert done.returncode == 0, done.stdout + done.stderr
    tests = {t["name"]: t for t in data["tests"]}
    assert data["score"] == sum(t["score"] for t in data["tests"]) == 1.0
    assert tests["double: double(n) returns twice n, for a large n."]["output"] == \
        "double(n) should be 2 n for every n"
    assert tests["double: double(0) is 0."] == {"name": "double: double(0) is 0.", "number": "2",
                                        "score": 1.0, "max_score": 1.0, "output": "",
                                        "visibility": "after_due_date"}

    # no notebook at all: a malformed submission, every check failed, score 0
    data, done = run_autograder(autograder, None, "2026-11-04T10:00:00+03:00")
    assert done.returncode == 0
    assert data["score"] == 0 and "Notebook: malformed" in data["output"]
    assert all(t["score"] == 0 and t["max_score"] > 0 for t in data["tests"])


@pytest.mark.kernel
def test_an_unknown_submission_time_is_never_on_time(autograder):
    data, done = run_autograder(autograder, "def double(n):\n    return 2 * n", None)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sum(t["score"] for t in data["tests"]) == 3.0
    assert data["score"] == 0.0
    assert "no readable created_at" in data["output"] and "pending" in data["output"]


def test_a_bundle_that_cannot_grade_says_so_in_results_json(bundle, tmp_path, monkeypatch,
                                                           capsys):
    from grader.kernel import sandbox
    from grader.ship.gradescope import runner

    root = tmp_path / "autograder"
    zipfile.ZipFile(bundle).extractall(root / "source")
    toml = root / "source" / "course.toml"
    toml.write_text(toml.read_text().replace('sandbox = "auto"', 'sandbox = "required"'))
    write_notebook(root / "submission" / "hw1.ipynb", "def double(n):\n    return 2 * n")
    monkeypatch.setattr(sandbox, "probe", lambda: sandbox.Probe(False, "no bwrap in this image"))
    assert runner.main([str(root)]) == 2
    data = json.loads((root / "results" / "results.json").read_text())
    validate(data)
    assert data["score"] == 0.0 and data["tests"] == []
    assert "could not grade" in data["output"] and "bwrap" not in data["output"]
    assert "requires the kernel sandbox: no bwrap in this image" in capsys.readouterr().out
