"""The benchmark (``bench/``, ``make bench``): its homework's checks are fair, its CPU count
includes every descendant, a run that grades wrong does not count, and it runs end to end.
No test here asserts a timing."""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import REPO

from bench import homework, tools

PUBLIC_ANSWER = {"linear_params": 16, "sparsity": 0.5}


def _function(source: str) -> object:
    scope: dict[str, object] = {"torch": torch}
    exec(source, scope)
    return next(v for k, v in scope.items() if k in ("linear_params", "sparsity"))


def _passes(check: homework.Check, function: object, seed: int) -> bool:
    scope = {"rng": random.Random(seed), "torch_rng": torch.Generator().manual_seed(seed),
             "torch": torch, check.function: function}
    try:
        exec(check.body, scope)
    except AssertionError:
        return False
    return True


@pytest.mark.parametrize("check", homework.CHECKS, ids=lambda c: c.name)
def test_each_correct_variant_passes_and_a_constant_fails_on_every_draw(check):
    """Both ways students write each function (the float32 one included) pass on every draw;
    a public answer returned as a constant fails on every draw."""
    cells = [homework.function_cells(variant, "s") for variant in range(4)]
    index = [c.function for c in homework.CHECKS].index(check.function)
    variants = {cell[index] for cell in cells}
    assert len(variants) == 2
    constant = _function(f"def {check.function}(*args, **kwargs):\n"
                         f"    return {PUBLIC_ANSWER[check.function]}")
    for seed in range(300):
        for source in variants:
            assert _passes(check, _function(source), seed), (source, seed)
        assert not _passes(check, constant, seed), seed


def test_the_nbgrader_and_otter_renditions_run_the_same_bodies():
    checks_file = homework.pytest_checks()
    source = homework.nbgrader_source()
    hidden = [c.source for c in source.cells if c.metadata.get("nbgrader", {}).get("grade")]
    for check in homework.CHECKS:
        body = check.body.strip().splitlines()
        for rendition in (checks_file, homework.otter_test_file(check),
                          next(h for h in hidden if f"_check_{check.name}" in h)):
            assert all(line in rendition for line in body), (check.name, rendition)
    compile(checks_file, "test_hw.py", "exec")
    for check in homework.CHECKS:
        compile(homework.otter_test_file(check), f"{check.name}.py", "exec")


def test_a_run_that_grades_a_submission_wrong_does_not_count(tmp_path):
    submissions = tmp_path / "subs"
    homework.write_submissions(submissions, 2)
    tool = tools.tools()["grader-off"]
    plan = tools.prepare(tool, tmp_path / "grader", submissions, 2)
    assert plan.verify() == [f"no gradebook CSV at {tmp_path / 'grader' / 'gradebook.csv'}"]
    with (tmp_path / "grader" / "gradebook.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "hw_raw", "hw_status"])
        writer.writerow(["s000", "100.00", "ok"])
        writer.writerow(["s001", "50.00", "ok"])
    assert plan.verify() == ["s001: ok, raw 50.00 %"]


MEASURE_ORPHAN = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path
    from bench.measure import run_measured

    # the command forks a grandchild and exits at once; the grandchild, an orphan, burns
    # half a second of CPU: only a subreaper that waits for it sees that CPU
    burn = ("import os, time\\n"
            "if os.fork() == 0:\\n"
            "    time.sleep(0.3)\\n"
            "    end = time.process_time() + 0.5\\n"
            "    while time.process_time() < end:\\n"
            "        pass\\n"
            "    os._exit(0)\\n")
    log = Path(sys.argv[1])
    orphan = run_measured([[sys.executable, "-c", burn]], cwd=log.parent, env=os.environ,
                          log=log)
    failing = run_measured([["false"], ["echo", "not reached"]], cwd=log.parent,
                           env=os.environ, log=log)
    print(json.dumps({"cpu": orphan.cpu_s, "adopted": orphan.adopted, "wall": orphan.wall_s,
                      "code": orphan.returncode, "failing": failing.returncode}))
''')


def test_the_cpu_of_a_descendant_that_outlives_its_parent_is_counted(tmp_path):
    # in a process of its own: the measuring process becomes a subreaper
    done = subprocess.run([sys.executable, "-c", MEASURE_ORPHAN, str(tmp_path / "log")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["adopted"] == 1 and got["code"] == 0
    assert got["cpu"] >= 0.45, got  # the orphan's 0.5 s of CPU is in the count
    assert got["failing"] == 1
    assert "not reached" not in (tmp_path / "log").read_text().replace("$ echo not reached", "")


@pytest.mark.kernel
def test_the_benchmark_runs_end_to_end_at_tiny_size(tmp_path):
    figures = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--n", "2", "--tools", "grader,bare", "--homeworks",
         "none", "--json", str(figures), "--workdir", str(tmp_path / "work")],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = {r["tool"]: r for r in json.loads(figures.read_text())["throughput"]}
    assert set(runs) == {"grader", "bare"}
    for run in runs.values():
        assert run["ok"] and run["problems"] == [] and run["n"] == 2
        assert run["wall_s"] > 0 and run["cpu_s"] > 0 and run["killed"] == 0
    assert runs["grader"]["jobs"] == tools.cores() and runs["grader"]["sandboxed"]
    # every submission was graded, and graded right
    with (tmp_path / "work" / "grader" / "gradebook.csv").open(newline="") as f:
        assert [(r["student"], r["hw_raw"]) for r in csv.DictReader(f)] == \
            [("s000", "100.00"), ("s001", "100.00")]


def test_an_unknown_tool_is_a_usage_error():
    done = subprocess.run([sys.executable, "-m", "bench", "--tools", "grader,gradescope"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "gradescope" in done.stderr
