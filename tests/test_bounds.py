"""Everything a submission controls is bounded, and every failure it causes is its own (issue 27).

Each case is a real kernel through the grader's path: an answer past the reply limit, an answer
nested too deeply, a value of the wrong kind, exception names of a megabyte or with line breaks,
a notebook file past its limit, layers of any size rebuilt in the grader, a kernel that exits
after running its cells. The grading process's peak memory is measured in a fresh interpreter,
the answer small and large.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, write_notebook

from grader.pipeline.grading import grade_notebook
from grader.records import Limits, Outcome, Status
from grader.text import DETAIL_CHARS, LINE_CHARS, NAME_CHARS

pytestmark = pytest.mark.kernel

LIMITS = Limits(cell_timeout_s=30, notebook_timeout_s=90, call_timeout_s=20, memory_mb=3072,
                max_reply_mb=8, max_notebook_mb=1)

CHECKS = '''
import pytest
import torch
from grader.checks import layer, seq


@pytest.mark.points(1)
def test_tensor(student):
    """A tensor comes back."""
    got = student.call("tensor")
    assert isinstance(got, torch.Tensor) and got.numel() > 0, "tensor() returns a tensor"


@pytest.mark.points(1)
def test_answer(student, rng):
    """answer(n) is n + 1."""
    n = rng.randrange(1000)
    assert student.call("answer", n) == n + 1, "answer(n) should be n + 1"


@pytest.mark.points(1)
def test_model(student):
    """model() returns a Linear(4, 2) model."""
    got = student.call("model")
    assert got.rebuild()(torch.zeros(1, 4)).shape == (1, 2)
'''

HONEST = ("import torch\nfrom torch import nn\n"
          "def tensor():\n    return torch.ones(3)\n"
          "def answer(n):\n    return n + 1\n"
          "def model():\n    return nn.Sequential(nn.Linear(4, 2))\n")


@pytest.fixture
def checks(tmp_path) -> Path:
    folder = tmp_path / "checks"
    folder.mkdir()
    (folder / "test_bounded.py").write_text(CHECKS)
    return folder


def grade(tmp_path: Path, checks: Path, *cells: str, limits: Limits = LIMITS):
    notebook = write_notebook(tmp_path / "sub" / "nb.ipynb", *cells)
    execution, run = grade_notebook(notebook, checks, limits, seed=7)
    return execution, {r.name.split("::")[1]: r for r in run.results}


def test_an_answer_past_the_reply_limit_fails_that_check_and_no_other(tmp_path, checks):
    big = HONEST + "def tensor():\n    return torch.ones(8 * 2**20)\n"  # 32 MB of float32
    execution, results = grade(tmp_path, checks, big)
    assert execution.status is Status.OK
    assert results["test_tensor"].outcome is Outcome.FAILED
    assert "larger than 8 MB" in results["test_tensor"].message
    assert results["test_answer"].outcome is Outcome.PASSED  # the kernel still answers


def test_an_answer_nested_too_deeply_is_the_students_failure(tmp_path, checks):
    # the notebook wraps the kernel's end of the protocol and answers with deep JSON
    fake = ("import _grader_bridge.kernel_end as end\n"
            "from IPython.display import display\n"
            "def install(shell, fields, send=None):\n"
            "    def bridge(request):\n"
            "        display({end.wire.MIME: '[' * 200000 + ']' * 200000}, raw=True)\n"
            "    shell.user_ns['__grader_bridge__'] = bridge\n"
            "end.install = install\n")
    execution, results = grade(tmp_path, checks, HONEST, fake)
    assert execution.status is Status.OK
    for result in results.values():
        assert result.outcome is Outcome.FAILED, result
        assert "nested too deeply" in result.message


def test_a_value_of_the_wrong_kind_fails_the_check_that_used_it(tmp_path, checks):
    execution, results = grade(tmp_path, checks, HONEST + "def model():\n    return 5\n")
    assert results["test_model"].outcome is Outcome.FAILED
    assert results["test_model"].message.startswith(
        "model returned something this check could not use: AttributeError")
    assert results["test_answer"].outcome is Outcome.PASSED


def test_layers_of_any_size_are_refused_without_being_built(tmp_path, checks):
    # a Linear(4, 2) whose attributes claim 10^9 x 10^9: rebuilt as claimed, 4 EB
    huge = HONEST + ("def model():\n"
                     "    layer = nn.Linear(4, 2)\n"
                     "    layer.in_features = layer.out_features = 10**9\n"
                     "    return nn.Sequential(layer)\n")
    execution, results = grade(tmp_path, checks, huge)
    assert results["test_model"].outcome is Outcome.FAILED
    assert "returned weights do not fit the returned layers" in results["test_model"].message


def test_exception_names_are_bounded_and_kept_on_one_line(tmp_path, checks):
    raisers = [f"raise type({name}, (Exception,), {{}})('m\\r=1+1\\n# heading')"
               for name in ("'E' * 2**20", repr("X\r=1+1+cmd|' /C calc'!A0"),
                            repr("A\n# Fake heading: 100 %"), repr("<script>alert(1)</script>"))]
    execution, _ = grade(tmp_path, checks, HONEST, *raisers)
    assert execution.status is Status.CELL_ERROR
    assert len(execution.cell_errors) == 4
    for error in execution.cell_errors:
        assert len(error.ename) <= NAME_CHARS and len(error.message) <= LINE_CHARS
        assert not any(c in error.ename + error.message for c in "\r\n")
    assert len(execution.detail) <= 2 * DETAIL_CHARS


def test_a_notebook_file_past_its_limit_is_malformed_and_never_runs(tmp_path, checks):
    notebook = write_notebook(tmp_path / "sub" / "nb.ipynb", HONEST + "#" + "x" * 2**21)
    execution, run = grade_notebook(notebook, checks, LIMITS, seed=1)
    assert execution.status is Status.MALFORMED and execution.cells_run == 0
    assert "more than the 1 MB a notebook may be" in execution.detail
    assert all(r.outcome is Outcome.FAILED for r in run.results)


def test_a_kernel_that_exits_says_when(tmp_path, checks):
    execution, _ = grade(tmp_path, checks, HONEST, "x = 1", "import os\nos._exit(3)")
    assert execution.status is Status.KERNEL_DIED
    assert "while running cell 3" in execution.detail
    assert "did not start" not in execution.detail


PEAK = '''
import json, resource, sys
from pathlib import Path
from grader.pipeline.grading import grade_notebook
from grader.records import Limits
limits = Limits(**json.loads(sys.argv[3]))
execution, run = grade_notebook(Path(sys.argv[1]), Path(sys.argv[2]), limits, seed=1)
print(json.dumps({"peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "outcomes": {r.name: r.outcome.value for r in run.results}}))
'''


def _peak_kb(tmp_path: Path, checks: Path, cell: str, name: str) -> tuple[int, dict[str, str]]:
    notebook = write_notebook(tmp_path / name / "nb.ipynb", cell)
    limits = {"max_reply_mb": 64, "call_timeout_s": 60, "memory_mb": 4096}
    done = subprocess.run([sys.executable, "-c", PEAK, str(notebook), str(checks),
                           json.dumps(limits)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return int(data["peak_kb"]), data["outcomes"]


def test_the_grading_processs_memory_does_not_grow_with_the_students_answer(tmp_path, checks):
    small, _ = _peak_kb(tmp_path, checks, HONEST, "small")
    # 256 MB of float32: over the 64 MB reply limit, dropped before the grader holds it
    large, outcomes = _peak_kb(tmp_path, checks, HONEST + "def tensor():\n"
                               "    return torch.ones(64 * 2**20)\n", "large")
    assert outcomes["test_bounded::test_tensor"] == "failed"
    assert large - small < 128 * 1024, (small, large)  # KB: well under the 256 MB answer


# A template of homework 1 whose notebook wraps the kernel's end of the check protocol: every
# request that carries a list of whole numbers is answered as measure_latency or throughput
# would answer it, from those numbers, without running anything.
FORGER = '''
import json
import numpy as np
import _grader_bridge.kernel_end as end

def _plain(value):
    # wire data back to plain values: tagged dicts and tuples unwrapped
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in (end.wire.DICT,
                                                                             end.wire.TUPLE):
        return _plain(next(iter(value.values())))
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value

def _forged(args):
    # measure_latency's answer, from the durations and counts the check sent
    if not args or args[0] != "measure_latency":
        return None
    times = next((v for v in args if isinstance(v, dict) and v
                  and all(isinstance(t, list) for t in v.values())), None)
    counts = next((v for v in args if isinstance(v, dict) and "reps" in v), None)
    if times is None or counts is None:
        return None
    durations = next(iter(times.values()))
    timed = durations[counts["warmup"]:]
    answer = {"median_ms": float(np.percentile(timed, 50)),
              "p10_ms": float(np.percentile(timed, 10)),
              "p90_ms": float(np.percentile(timed, 90))}
    return answer, ["str"] * 3, [[[2], False, False]] * len(durations), True

_install = end.install

def install(shell, fields, send=None):
    _install(shell, fields, send)
    honest = shell.user_ns["__grader_bridge__"]
    def bridge(request_json):
        forged = _forged(_plain(json.loads(request_json).get("args", [])))
        if forged is None:
            return honest(request_json)
        honest._send({"ok": True, "value": end.to_wire(forged, fields)})
    shell.user_ns["__grader_bridge__"] = bridge

end.install = install
'''


def test_a_notebook_cannot_answer_a_timing_check_from_what_the_check_sends(tmp_path):
    """The timing checks send no durations: each timed forward asks the grader for its own
    when it runs. A template that forges the protocol's answers earns nothing from them."""
    template = REPO / "assignments" / "hw1" / "hw1.ipynb"
    cells = [c.source for c in __import__("nbformat").read(template, as_version=4).cells
             if c.cell_type == "code"]
    notebook = write_notebook(tmp_path / "sub" / "hw1.ipynb", *cells, FORGER)
    checks = REPO / "solutions" / "hw1" / "checks"
    timing = ["test_hw1::test_measure_latency_percentiles",
              "test_hw1::test_throughput_on_the_graders_clock"]
    limits = Limits(cell_timeout_s=60, notebook_timeout_s=180, call_timeout_s=30)
    execution, run = grade_notebook(notebook, checks, limits, seed=3, select=timing)
    assert execution.status is Status.CELL_ERROR  # the template's own NotImplementedErrors
    assert [(r.name, r.earned) for r in run.results] == [(name, 0.0) for name in timing]
    assert all(r.outcome is Outcome.FAILED for r in run.results)


CONV_CHECK = '''
import pytest
import torch


@pytest.mark.points(1)
def test_conv(student):
    """conv() keeps an 8 x 8 image 8 x 8."""
    out = student.call("conv").rebuild()(torch.zeros(1, 3, 8, 8))
    assert out.shape == (1, 4, 8, 8), f"got {tuple(out.shape)}"
'''


@pytest.mark.parametrize(("padding", "outcome"), [(1, Outcome.PASSED), (20_000, Outcome.FAILED)])
def test_running_returned_layers_is_bounded_by_what_they_would_compute(tmp_path, padding,
                                                                       outcome):
    # padding 20,000 makes a 4 x 40,006 x 40,006 output: 6.4e9 values, never computed here
    folder = tmp_path / "conv_checks"
    folder.mkdir()
    (folder / "test_conv.py").write_text(CONV_CHECK)
    source = ("import torch\nfrom torch import nn\n"
              f"def conv():\n    return nn.Sequential(nn.Conv2d(3, 4, 3, padding={padding}))\n")
    execution, results = grade(tmp_path, folder, source)
    assert results["test_conv"].outcome is outcome, results["test_conv"]
    if outcome is Outcome.FAILED:
        assert "would make an output of" in results["test_conv"].message


FLOPS_CHECK = '''
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@pytest.mark.points(1)
def test_flops(student):
    """A FlopCounterMode around the first forward counts that forward once."""
    returned = student.call("conv").rebuild()
    local = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1))
    counts = []
    for model in (returned, local):
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, 8, 8))
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1], f"counted {counts}"
'''


def test_the_bound_on_returned_layers_is_invisible_to_a_checks_flop_counter(tmp_path):
    # the bound runs the layers once on the meta device before their first forward: a check
    # counting that forward's FLOPs must not count the trial too (it once doubled the count)
    folder = tmp_path / "flop_checks"
    folder.mkdir()
    (folder / "test_flops.py").write_text(FLOPS_CHECK)
    source = ("import torch\nfrom torch import nn\n"
              "def conv():\n    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1))\n")
    _, results = grade(tmp_path, folder, source)
    assert results["test_flops"].outcome is Outcome.PASSED, results["test_flops"]
