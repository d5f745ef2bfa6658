"""What crosses from the kernel is decoded as data only."""

from __future__ import annotations

import base64
import io
import json
import pickle

import pytest
import torch

from grader.checks import kit_model, layer
from grader.kernel.protocol import (
    LayerInfo,
    ProtocolError,
    ReturnedModule,
    Student,
    StudentError,
    decode,
    encode,
)


class _Boom:
    """Unpickling this runs ``touch``: a crafted pickle must never get that far."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.path}",))


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize("value", [
    None, True, 3, 2.5, "text", [1, [2, 3]], (1, (2, "x")), {"a": (1, 2), "b": [None]},
    {"nested": {"deep": [(1,), {"k": 2}]}},
], ids=repr)
def test_plain_values_round_trip_with_types(value):
    assert decode(json.loads(json.dumps(encode(value)))) == value


def test_tensors_round_trip_exactly():
    t = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    back = decode(json.loads(json.dumps(encode({"w": t, "i": torch.arange(5)}))))
    assert torch.equal(back["w"], t) and back["i"].dtype == torch.int64


def test_a_crafted_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    raw = pickle.dumps(_Boom(str(marker)))
    with pytest.raises(StudentError, match="could not be read safely"):
        decode({"__tensor__": _b64(raw)})
    buf = io.BytesIO()
    torch.save({"evil": _Boom(str(marker))}, buf)
    with pytest.raises(StudentError):
        decode({"__tensor__": _b64(buf.getvalue())})
    assert not marker.exists()


def test_a_non_tensor_in_a_tensor_slot_is_refused():
    buf = io.BytesIO()
    torch.save({"a": 1}, buf)
    with pytest.raises(StudentError, match="not a tensor"):
        decode({"__tensor__": _b64(buf.getvalue())})


@pytest.mark.parametrize("data", [
    {"__tuple__": [1], "extra": 2}, {"__object__": "os.system"}, {"__tensor__": 5},
    {"a": 1, "b": 2},
], ids=str)
def test_unknown_shapes_of_data_are_refused(data):
    with pytest.raises(StudentError):
        decode(data)


def test_deep_nesting_is_refused():
    data: object = 1
    for _ in range(100):
        data = [data]
    with pytest.raises(StudentError, match="nested too deeply"):
        decode(data)


def test_encode_refuses_what_it_cannot_send():
    with pytest.raises(ProtocolError):
        encode(object())


def test_module_specs_encode_as_data():
    spec = kit_model("make_cnn", channels=(4, 8, 16), training=True)
    data = json.loads(json.dumps(encode(spec)))["__module__"]
    assert data["kind"] == "kit" and data["training"] is True
    assert data["kwargs"]["channels"] == {"__tuple__": [4, 8, 16]}
    assert encode(layer("Conv2d", 1, 2, 3))["__module__"]["args"] == [1, 2, 3]


def _described(module: torch.nn.Module) -> ReturnedModule:
    layers = []
    for name, sub in module.named_modules():
        config = {}
        if isinstance(sub, torch.nn.Conv2d):
            config = {k: getattr(sub, k) for k in ("in_channels", "out_channels", "kernel_size",
                                                   "stride", "padding", "groups")}
            config["bias"] = sub.bias is not None
        layers.append(LayerInfo(name, type(sub).__name__, config, type(sub).__module__))
    return ReturnedModule(tuple(layers), module.state_dict(),
                          {n: m.training for n, m in module.named_modules()})


def test_returned_module_rebuilds_into_an_equal_module():
    torch.manual_seed(0)
    original = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, groups=4, padding=1),
                                   torch.nn.ReLU(), torch.nn.Conv2d(4, 6, 1, bias=False)).eval()
    described = _described(original)
    rebuilt = described.rebuild()
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(rebuilt(x), original(x))
    assert [i.name for i in described.leaves()] == ["0", "1", "2"]


def test_rebuild_refuses_a_quantized_layer_of_the_same_name():
    module = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1))
    described = _described(module)
    layers = (described.layers[0], LayerInfo("0", "Conv2d", described.layers[1].config,
                                             "torch.ao.nn.quantized.modules.conv"))
    with pytest.raises(StudentError, match="Conv2d"):
        ReturnedModule(layers, described.state_dict, described.training).rebuild()


def test_rebuild_refuses_layer_types_it_does_not_know():
    returned = ReturnedModule((LayerInfo("", "Sequential", {}), LayerInfo("0", "Evil", {})),
                              {}, {})
    with pytest.raises(StudentError, match="Evil"):
        returned.rebuild()


def test_rebuild_refuses_weights_that_do_not_fit():
    module = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1))
    described = _described(module)
    bad = ReturnedModule(described.layers, {"0.weight": torch.zeros(1)}, described.training)
    with pytest.raises(StudentError, match="do not fit"):
        bad.rebuild()


def _student(reply: dict) -> Student:
    return Student(lambda request, timeout: reply, call_timeout=1.0)


def test_student_errors_and_grader_errors_are_told_apart():
    with pytest.raises(StudentError, match=r"f\(\) raised ZeroDivisionError: division by zero"):
        _student({"ok": False, "error": "ZeroDivisionError: division by zero"}).call("f")
    # a spec that builds here but not in the kernel: the kernel is broken, not the grader
    with pytest.raises(StudentError, match="could not build the arguments: ImportError"):
        _student({"ok": False, "stage": "arguments", "error": "ImportError: no torch"}).call(
            "f", layer("Linear", 2, 3))
    # a spec that does not build here is the check's mistake, found before anything is sent
    sent: list[str] = []
    student = Student(lambda request, timeout: sent.append(request) or {"ok": True},
                      call_timeout=1.0)
    with pytest.raises(ProtocolError, match="does not build"):
        student.call("f", layer("NoSuchLayer", 2))
    with pytest.raises(ProtocolError, match="does not build"):
        student.call("f", layer("Linear", 2, 3, state_dict={"weight": torch.zeros(1)}))
    assert sent == []
    assert _student({"ok": True, "value": {"__tuple__": [1, 2]}}).call("f") == (1, 2)
