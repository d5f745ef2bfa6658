"""Both ends of the check protocol in one process: the kernel's end
(``grader.kernel.bridge.kernel_end``) answers a ``Student`` through a loopback transport, so its
encoder and its module building run here, without a kernel."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from grader.checks import changed_modes, changed_state, kit_model, layer, probe, seq
from grader.errors import ProtocolError, StudentError, StudentRaised
from grader.kernel.bridge import kernel_end, wire
from grader.kernel.protocol import REBUILDABLE, ReturnedModule, Student


def loopback(namespace: dict) -> Student:
    """A Student whose kernel is ``namespace``, answered by the kernel's end in-process."""
    replies: list[dict] = []
    shell = type("Shell", (), {"user_ns": namespace})()
    kernel_end.install(shell, REBUILDABLE, send=replies.append)

    def transport(request_json: str, timeout: float) -> dict:
        namespace["__grader_bridge__"](request_json)
        # what crosses is JSON text, as it is under a real kernel
        return json.loads(json.dumps(replies.pop()))

    return Student(transport, call_timeout=5.0)


def test_values_tensors_and_containers_cross_both_ways():
    student = loopback({"echo": lambda *args, **kwargs: (args, kwargs)})
    t = torch.randn(3, 2, generator=torch.Generator().manual_seed(1))
    args, kwargs = student.call("echo", 1, 2.5, "s", None, [True], (t,), {"k": t}, n=t.int())
    assert args[:5] == (1, 2.5, "s", None, [True])
    assert torch.equal(args[5][0], t) and torch.equal(args[6]["k"], t)
    assert torch.equal(kwargs["n"], t.int()) and kwargs["n"].dtype == torch.int32


def test_numpy_results_come_back_as_numbers_and_tensors():
    student = loopback({"f": lambda: (np.int64(7), np.float32(0.5), np.arange(4))})
    number, half, array = student.call("f")
    assert (number, half) == (7, 0.5) and isinstance(number, int)
    assert torch.equal(array, torch.arange(4))


def test_a_spec_is_built_in_the_kernel_with_weights_and_mode():
    state = {k: torch.full_like(v, 0.25) for k, v in nn.Linear(3, 2).state_dict().items()}
    seen = {}

    def inspect_model(model):
        seen["model"] = model
        return model.training, float(model[0].weight.detach().sum())

    student = loopback({"inspect_model": inspect_model})
    spec = seq(layer("Linear", 3, 2), layer("ReLU"), state_dict={
        "0.weight": state["weight"], "0.bias": state["bias"]}, training=True)
    training, total = student.call("inspect_model", spec)
    assert training is True and total == pytest.approx(1.5)
    assert isinstance(seen["model"][1], nn.ReLU)


def test_kit_models_and_probes_are_built_from_their_names():
    student = loopback({"kinds": lambda *ms: [type(m).__name__ for m in ms]})
    assert student.call("kinds", kit_model("make_cnn", channels=(4, 8, 16)),
                        probe("Sleep", ms=1.0), probe("CallCounter")) == [
        "Sequential", "Sleep", "CallCounter"]


def test_a_returned_module_is_described_and_rebuilds_equal():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4),
                          nn.ReLU(), nn.Flatten(), nn.Linear(256, 10))
    model[1].train()
    student = loopback({"give": lambda: model})
    back = student.call("give")
    assert isinstance(back, ReturnedModule)
    conv = next(info for info in back.layers if info.type == "Conv2d")
    assert conv.config["bias"] is False and conv.config["padding"] == (1, 1)
    rebuilt = back.rebuild().eval()
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(rebuilt(x), model.eval()(x))


def test_call_inspect_returns_the_arguments_after_the_call():
    def bump(model):
        model.train()
        with torch.no_grad():
            model.weight.add_(1.0)

    state = nn.Linear(2, 2).state_dict()
    student = loopback({"bump": bump})
    _, (after,) = student.call_inspect("bump", layer("Linear", 2, 2, state_dict=state))
    assert changed_state(state, after) == ["weight"]
    assert changed_modes(after, training=False) == ["<model>"]


def double_all(values):
    """A grader-written function run in the kernel with the student's names in scope."""
    return [student_double(v) for v in values]  # noqa: F821 - a name of the notebook


def test_drive_runs_a_grader_function_with_the_students_names():
    student = loopback({"student_double": lambda v: 2 * v})
    assert student.drive(double_all, [1, 2, 3]) == [2, 4, 6]


@pytest.mark.parametrize("program", [
    "def drive(values):\n    return values\n",  # text nothing lints: refused
    lambda values: values,  # no source of its own to send
])
def test_drive_takes_only_a_module_level_function(program):
    student = loopback({})
    with pytest.raises(ProtocolError, match="module-level function"):
        student.drive(program, [1])


@pytest.mark.parametrize(("namespace", "name", "message"), [
    ({"f": lambda: 1 / 0}, "f", r"f\(\) raised ZeroDivisionError: division by zero"),
    ({}, "g", "g is not defined in your notebook"),
    ({"h": lambda: object()}, "h", "h returned something that cannot be sent back"),
])
def test_the_students_errors_come_back_as_failures(namespace, name, message):
    with pytest.raises(StudentError, match=message):
        loopback(namespace).call(name)


def test_the_kernels_end_imports_only_what_it_ships_with():
    # inside the kernel there is no grader package: the bridge must not import one
    code = ("import sys, grader.kernel.bridge.kernel_end as k\n"
            "print(sorted(m for m in sys.modules if m.startswith('grader') "
            "and m not in ('grader', 'grader.kernel', 'grader.kernel.bridge', "
            "'grader.kernel.bridge.kernel_end', 'grader.kernel.bridge.wire')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_the_wire_refuses_what_it_cannot_hold():
    with pytest.raises(wire.WireError, match="cannot send a object"):
        wire.encode(object(), lambda v: NotImplemented)
    with pytest.raises(wire.WireError):
        wire.decode({"__what__": 1}, {})


def _notebook(source: str) -> dict:
    """A namespace whose functions were defined by a notebook cell (as ipykernel names it)."""
    namespace: dict = {}
    exec(compile(source, "/tmp/ipykernel_1/2615.py", "exec"), namespace)
    return namespace


def test_a_failure_names_the_students_call_never_the_checks_helper():
    notebook = _notebook("def student_double(v, k=0):\n    raise ValueError('odd input')\n")
    with pytest.raises(StudentRaised) as caught:
        loopback(notebook).drive(double_all, [1])
    assert str(caught.value) == "student_double(...) raised ValueError: odd input"
    assert "double_all" not in str(caught.value)  # the check's own helper is not named
    assert (caught.value.function, caught.value.ename) == ("student_double", "ValueError")
    with pytest.raises(StudentRaised) as caught:
        loopback(notebook).call("student_double", torch.zeros(2, 3), k=5)
    assert str(caught.value) == ("student_double(tensor of shape (2, 3), k=5) raised "
                                 "ValueError: odd input")


def test_a_name_the_notebook_lacks_is_said_to_be_not_defined():
    with pytest.raises(StudentRaised, match=r"^student_double is not defined in your notebook"):
        loopback({}).drive(double_all, [1])


def test_a_memory_error_names_the_kernels_limit():
    student = loopback(_notebook("def grow():\n    raise MemoryError()\n"))
    student.memory_mb = 3072
    with pytest.raises(StudentRaised, match=r"grow\(\) raised MemoryError \(the notebook's "
                                            r"kernel may use at most 3072 MB of memory\)"):
        student.call("grow")
