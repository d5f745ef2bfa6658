"""Public checks for homework 5: tiny fixed cases you can verify by hand.

Conventions: export in eval mode with a dynamic batch dimension; an ONNX model is its file plus
the external data files its initializers reference (read from the file, whatever their names);
sizes are bytes of files that exist; runtime_ops counts the nodes of the graph ONNX Runtime
writes after its optimizations at a level. Files your
functions write are loaded and run by the grader itself, in a separate process, with its own
code (here too, through ``student.judge``).

The hidden checks test the same properties on other models, batch sizes and file names, drawn
at grading time.
"""

from __future__ import annotations

import pytest
import torch

from grader.checks import ModuleSpec, layer, seq

# A tiny model with known weights: Linear(4 -> 2) on a flattened 1x2x2 image.
WEIGHT = torch.tensor([[1.0, -1.0, 0.5, 2.0], [0.0, 1.0, -2.0, 1.0]])
BIAS = torch.tensor([0.25, -0.5])


def _tiny():
    linear = ModuleSpec("layer", "Linear", (4, 2), {},
                        state_dict={"weight": WEIGHT.clone(), "bias": BIAS.clone()})
    return seq(layer("Flatten"), linear)


def _tiny_outputs(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(len(x), 4) @ WEIGHT.T + BIAS


X3 = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]], [[[0.0, 1.0], [1.0, 1.0]]],
                   [[[2.0, 2.0], [2.0, 2.0]]]])  # batch of 3: logits [[1.25, -0.5], ...]

LOAD_PT2 = '''
import os
import torch

def judge(folder, inputs):
    module = torch.export.load(os.path.join(folder, "public_tiny.pt2")).module()
    with torch.no_grad():
        return [module(inputs["x"][:1]), module(inputs["x"])]
'''

INSPECT_INT8 = '''
import os
import onnx

def judge(folder, inputs):
    model = onnx.load(os.path.join(folder, "public_int8.onnx"), load_external_data=False)
    return sorted({int(t.data_type) for t in model.graph.initializer})
'''


def _count_exported_ops(model, example):
    """Run in your kernel: count_ops of export_program(model, example)."""
    return count_ops(export_program(model, example))  # noqa: F821 - the notebook's functions


@pytest.mark.points(1)
def test_count_ops_public(student):
    """{str(node.target): count} over the call_function nodes of the eval-mode export."""
    model = seq(layer("Conv2d", 1, 2, 3, padding=1), layer("BatchNorm2d", 2), layer("ReLU"),
                layer("Flatten"), layer("Linear", 32, 3), training=True)
    got = student.with_timeout(60).drive(
        _count_exported_ops,
        model, torch.zeros(2, 1, 4, 4))
    expected = {"aten.conv2d.default": 1, "aten.batch_norm.default": 1, "aten.relu.default": 1,
                "aten.flatten.using_ints": 1, "aten.linear.default": 1}
    assert got == expected, (
        f"count_ops(export_program(Conv2d, BatchNorm2d, ReLU, Flatten, Linear)) should be "
        f"{expected} (eval mode: no aten.add_ for BatchNorm's counter), got {got}"
    )


@pytest.mark.points(1)
def test_save_pt2_public(student):
    """The .pt2, reloaded by the grader, gives the model's outputs at batch 1 and batch 3."""
    path = student.with_timeout(120).call("save_pt2", _tiny(), X3[:2], "public_tiny.pt2")
    assert path == "public_tiny.pt2", f"save_pt2 should return the path it wrote, got {path!r}"
    assert path in student.files(), "save_pt2 did not write public_tiny.pt2"
    one, three = student.judge(LOAD_PT2, {"x": X3})
    expected = _tiny_outputs(X3)
    assert torch.allclose(one, expected[:1], atol=1e-5), (
        f"the reloaded program at batch 1 should give {expected[:1].tolist()}, got {one.tolist()}"
    )
    assert torch.allclose(three, expected, atol=1e-5), (
        f"the reloaded program at batch 3 should give {expected.tolist()}, got {three.tolist()}"
    )


# Linear(64 -> 8) on a flattened 8x8 image, with fixed weights: big enough for the exporter to
# put its weight into the external data file. One export serves the three ONNX checks.
WEIGHT64 = ((torch.arange(8 * 64) % 7 - 3) / 8).reshape(8, 64)
BIAS64 = (torch.arange(8) - 4) / 4
_EXPORTED: dict[int, object] = {}  # id(student) -> what to_onnx returned (or its error)


def _onnx_files(student):
    """to_onnx of the Linear(64 -> 8) model to public_files.onnx, once per run."""
    if id(student) not in _EXPORTED:
        linear = ModuleSpec("layer", "Linear", (64, 8), {},
                            state_dict={"weight": WEIGHT64.clone(), "bias": BIAS64.clone()})
        try:
            _EXPORTED[id(student)] = student.with_timeout(120).call(
                "to_onnx", seq(layer("Flatten"), linear), torch.zeros(2, 1, 8, 8),
                "public_files.onnx")
        except AssertionError as error:  # the student's error: each check reports it
            _EXPORTED[id(student)] = error
    result = _EXPORTED[id(student)]
    if isinstance(result, AssertionError):
        raise AssertionError(f"to_onnx failed: {result}")
    return result


@pytest.mark.points(1)
def test_to_onnx_files_public(student):
    """to_onnx writes public_files.onnx and the weights into public_files.onnx.data, and
    returns both; artifact_size sums their sizes."""
    files = _onnx_files(student)
    expected = ["public_files.onnx", "public_files.onnx.data"]
    assert isinstance(files, list | tuple) and sorted(files) == expected, (
        f"to_onnx should return {expected} (the model and its external data), got {files}"
    )
    sizes = student.files()
    missing = [f for f in expected if f not in sizes]
    assert not missing, f"to_onnx returned {files}, but {missing} do not exist"
    total = sizes["public_files.onnx"] + sizes["public_files.onnx.data"]
    got = student.call("artifact_size", list(files))
    assert got == total, f"artifact_size({files}) should be {total} bytes, got {got}"


@pytest.mark.points(1)
def test_run_onnx_public(student):
    """ONNX Runtime on the exported Linear(64 -> 8), at batch 3 (exported with a batch of 2)."""
    _onnx_files(student)
    x = torch.arange(3 * 64, dtype=torch.float32).reshape(3, 1, 8, 8) / 100
    got = student.call("run_onnx", "public_files.onnx", x)
    expected = x.reshape(3, 64) @ WEIGHT64.T + BIAS64
    assert isinstance(got, torch.Tensor) and got.shape == expected.shape and \
        torch.allclose(got, expected, atol=1e-4), (
            f"run_onnx('public_files.onnx', a batch of 3) should give {expected.tolist()}, "
            f"got {got}")


@pytest.mark.points(1)
def test_quantize_onnx_public(student):
    """The int8 model stores int8 weights (onnx.TensorProto.INT8 = 3)."""
    _onnx_files(student)
    calib = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    files = student.with_timeout(60).call("quantize_onnx", "public_files.onnx",
                                          "public_int8.onnx", calib)
    assert files == ["public_int8.onnx"], f"quantize_onnx should return its files, got {files}"
    assert "public_int8.onnx" in student.files(), "quantize_onnx did not write public_int8.onnx"
    dtypes = student.judge(INSPECT_INT8, {})
    assert 3 in dtypes, f"public_int8.onnx should hold int8 (type 3) initializers, got {dtypes}"


def _write_public_conv():
    """Run in your kernel: public_conv.onnx, Conv(1 -> 2, 1x1, no bias) -> Mul by a per-channel
    constant -> Relu, its two weights in public_weights.bin (written by onnx.save), and beside
    it a stale, empty public_conv.onnx.data that nothing references."""
    import os

    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if os.path.exists("public_weights.bin"):  # onnx.save refuses to overwrite external data
        os.remove("public_weights.bin")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["z"]),
         helper.make_node("Mul", ["z", "scale"], ["m"]),
         helper.make_node("Relu", ["m"], ["y"])], "public_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2, 4, 4])],
        [numpy_helper.from_array(np.ones((2, 1, 1, 1), np.float32), "w"),
         numpy_helper.from_array(np.full((2, 1, 1), 0.5, np.float32), "scale")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, "public_conv.onnx", save_as_external_data=True,
              location="public_weights.bin", size_threshold=0)
    open("public_conv.onnx.data", "wb").close()


@pytest.mark.points(1)
def test_onnx_files_public(student):
    """The weights of public_conv.onnx are in public_weights.bin; the empty public_conv.onnx.data
    beside it is referenced by nothing, so it is not part of the model."""
    student.drive(_write_public_conv)
    got = student.call("onnx_files", "public_conv.onnx")
    assert got == ["public_conv.onnx", "public_weights.bin"], (
        f"onnx_files('public_conv.onnx') should be ['public_conv.onnx', 'public_weights.bin'] "
        f"(read the initializers' locations, do not guess '<path>.data'), got {got}"
    )


@pytest.mark.points(1)
def test_runtime_ops_public(student):
    """Conv -> Mul by a constant -> Relu: "disabled" runs the three nodes of the file, "basic"
    folds the Mul into the Conv, "extended" fuses the Conv with its Relu (a com.microsoft
    operator)."""
    student.drive(_write_public_conv)
    expected = {"disabled": {"Conv": 1, "Mul": 1, "Relu": 1}, "basic": {"Conv": 1, "Relu": 1},
                "extended": {"com.microsoft:FusedConv": 1}}
    for level, ops in expected.items():
        got = student.call("runtime_ops", "public_conv.onnx", level)
        assert got == ops, f"runtime_ops('public_conv.onnx', {level!r}) should be {ops}, got {got}"
