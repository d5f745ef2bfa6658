"""Public checks for homework 5: tiny fixed cases you can verify by hand.

Conventions: export in eval mode with a dynamic batch dimension; an ONNX model is its file plus
the external data files it references; sizes are bytes of files that exist. Files your
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
def test_fold_bn_public(student):
    """A 1x1 conv with weight 2, no bias; BatchNorm gamma 3, beta 1, mean 0.5, var 3.99,
    eps 0.01: s = 3 / sqrt(3.99 + 0.01) = 1.5, so W' = 3 and b' = 1.5 * (0 - 0.5) + 1 = 0.25."""
    conv = ModuleSpec("layer", "Conv2d", (1, 1, 1), {"bias": False},
                      state_dict={"weight": torch.full((1, 1, 1, 1), 2.0)})
    bn = ModuleSpec("layer", "BatchNorm2d", (1,), {"eps": 0.01}, training=True, state_dict={
        "weight": torch.tensor([3.0]), "bias": torch.tensor([1.0]),
        "running_mean": torch.tensor([0.5]), "running_var": torch.tensor([3.99]),
        "num_batches_tracked": torch.tensor(10)})
    got = student.call("fold_bn", conv, bn)
    weight, bias = got.state_dict.get("weight"), got.state_dict.get("bias")
    assert weight is not None and bias is not None, (
        f"fold_bn should return a Conv2d with a weight and a bias, got {list(got.state_dict)}"
    )
    assert torch.allclose(weight.flatten(), torch.tensor([3.0])) and \
        torch.allclose(bias.flatten(), torch.tensor([0.25])), (
            f"fold_bn: W' = 2 * 1.5 = 3 and b' = 0.25 (running statistics, eps 0.01), got "
            f"weight {weight.flatten().tolist()}, bias {bias.flatten().tolist()}")


@pytest.mark.points(1)
def test_fold_conv_bn_public(student):
    """Conv2d -> BatchNorm2d -> ReLU becomes Conv2d -> ReLU (names kept: "0", "2")."""
    model = seq(layer("Conv2d", 1, 2, 3), layer("BatchNorm2d", 2), layer("ReLU"), training=True)
    got = student.call("fold_conv_bn", model)
    leaves = [(info.name, info.type) for info in got.leaves()]
    assert leaves == [("0", "Conv2d"), ("2", "ReLU")], (
        f"fold_conv_bn(Conv2d, BatchNorm2d, ReLU) should hold [('0', 'Conv2d'), ('2', 'ReLU')], "
        f"got {leaves}"
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
