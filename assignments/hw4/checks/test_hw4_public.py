"""Public checks for homework 4: tiny fixed cases you can verify by hand.

Conventions: signed b-bit range [-2^(b-1), 2^(b-1) - 1]; q = clamp(round(r / S) + Z, q_min,
q_max), rounding half to even; asymmetric S = (r_max - r_min) / (q_max - q_min),
Z = round(q_min - r_min / S) clamped into the range; symmetric per-channel S_c = max|W_c| / q_max.

The hidden checks test the same properties on other inputs drawn at grading time, and measure
the models your functions return (k-means, QAT, int8) on the test digits themselves; the
challenge (quantize_to_budget) on other budgets, with the model's channels in another order, on
held-out digits that the kit does not hold.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import nncourse
from grader.checks import ReturnedModule, kit_model, layer


@pytest.mark.points(1)
def test_qrange_public(student):
    """Signed [-2^(b-1), 2^(b-1) - 1], unsigned [0, 2^b - 1]."""
    for args, expected in [((8,), (-128, 127)), ((2,), (-2, 1)), ((4, False), (0, 15))]:
        got = student.call("qrange", *args)
        assert tuple(got) == expected, f"qrange{args} should be {expected}, got {got}"


@pytest.mark.points(1)
def test_linear_quantize_public(student):
    """r / S = -4, -0.8, 0, 1.04, 3.6, 12; rounded, plus Z = 1, clamped to [-8, 7]."""
    r = torch.tensor([-1.0, -0.2, 0.0, 0.26, 0.9, 3.0])
    got = student.call("linear_quantize", r, 0.25, 1, bits=4)
    assert got.dtype == torch.int8, f"the codes should be torch.int8, got {got.dtype}"
    assert got.tolist() == [-3, 0, 1, 2, 5, 7], f"expected [-3, 0, 1, 2, 5, 7], got {got.tolist()}"


@pytest.mark.points(1)
def test_dequantize_public(student):
    """S * (q - Z) in float32."""
    got = student.call("dequantize", torch.tensor([-3, 0, 1, 7], dtype=torch.int8), 0.25, 1)
    assert got.dtype == torch.float32 and got.tolist() == [-1.0, -0.25, 0.0, 1.5], (
        f"0.25 * ([-3, 0, 1, 7] - 1) = [-1.0, -0.25, 0.0, 1.5] in float32, got {got}"
    )


@pytest.mark.points(1)
def test_affine_qparams_public(student):
    """[-1, 2] at 8 bits: S = 3/255, Z = -128 + 85 = -43; [0.5, 2]: Z = -213 clamped to -128."""
    scale, zero_point = student.call("affine_qparams", torch.tensor([-1.0, 0.5, 2.0]), bits=8)
    assert math.isclose(scale, 3 / 255) and zero_point == -43, (
        f"expected (3/255, -43), got ({scale}, {zero_point})"
    )
    scale, zero_point = student.call("affine_qparams", torch.tensor([0.5, 1.0, 2.0]), bits=8)
    assert zero_point == -128, f"the zero point -213 should be clamped to -128, got {zero_point}"


@pytest.mark.points(1)
def test_symmetric_per_channel_scale_public(student):
    """max|w_c| / 7 at 4 bits, one scale per row, shape (3, 1)."""
    w = torch.tensor([[0.5, -2.0], [0.25, 0.125], [0.0, 0.0]])
    got = student.call("symmetric_per_channel_scale", w, bits=4)
    assert tuple(got.shape) == (3, 1), f"expected shape (3, 1), got {tuple(got.shape)}"
    assert torch.allclose(got[:2, 0], torch.tensor([2.0 / 7, 0.25 / 7])), (
        f"expected [2/7, 0.25/7] for the first two rows, got {got[:2, 0].tolist()}"
    )
    assert 0 < got[2, 0] < 1e-6, f"an all-zero row gets a tiny positive scale, got {got[2, 0]}"


@pytest.mark.points(1)
def test_update_codebook_public(student):
    """Cluster means [0.25, 2.0]; centroid 2 has no weight and keeps 5.0."""
    got = student.call("update_codebook", torch.tensor([0.0, 0.25, 0.5, 1.0, 2.0, 3.0]),
                       torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([0.0, 1.0, 5.0]))
    assert torch.allclose(got, torch.tensor([0.25, 2.0, 5.0])), (
        f"expected [0.25, 2.0, 5.0], got {got.tolist()}"
    )


@pytest.mark.points(1)
def test_kmeans_quantize_public(student):
    """1 bit from [0, 3.25]: two clusters, centroids 0.25 and 3.0."""
    w = torch.tensor([[0.0, 0.25, 0.5], [2.75, 3.0, 3.25]])
    codebook, labels = student.call("kmeans_quantize", w, 1)
    assert torch.allclose(codebook, torch.tensor([0.25, 3.0])), (
        f"expected the codebook [0.25, 3.0], got {codebook.tolist()}"
    )
    assert labels.tolist() == [[0, 0, 0], [1, 1, 1]], f"unexpected labels {labels.tolist()}"


@pytest.mark.points(1)
def test_fold_bn_public(student):
    """Conv2d(1, 1, 1) with weight 2, no bias, then BN with mean 1, var 4 - eps, gamma 3,
    beta 0.5: weight 2 * 3 / 2 = 3, bias (0 - 1) * 3 / 2 + 0.5 = -1."""
    conv = layer("Conv2d", 1, 1, 1, bias=False)
    conv = dataclasses.replace(conv, state_dict={"weight": torch.full((1, 1, 1, 1), 2.0)})
    bn = layer("BatchNorm2d", 1)
    bn = dataclasses.replace(bn, state_dict={
        "weight": torch.tensor([3.0]), "bias": torch.tensor([0.5]),
        "running_mean": torch.tensor([1.0]), "running_var": torch.tensor([4.0 - 1e-5]),
        "num_batches_tracked": torch.tensor(1),
    })
    got = student.call("fold_bn", conv, bn)
    assert isinstance(got, ReturnedModule) and got.layers[0].type == "Conv2d", (
        "fold_bn should return an nn.Conv2d"
    )
    weight, bias = got.state_dict["weight"].item(), got.state_dict["bias"].item()
    assert math.isclose(weight, 3.0, rel_tol=1e-5) and math.isclose(bias, -1.0, rel_tol=1e-5), (
        f"expected weight 3.0 and bias -1.0, got {weight} and {bias}"
    )


@pytest.mark.points(1)
def test_integer_linear_public(student):
    """Bias 0.5 / (0.1 * 0.5) = 10 and -0.3 / 0.025 = -12; shifted by 2 * row sums; requantized."""
    w_scale = torch.tensor([0.5, 0.25])
    q_b = student.call("quantize_bias", torch.tensor([0.5, -0.3]), 0.1, w_scale)
    assert q_b.dtype == torch.int32 and q_b.tolist() == [10, -12], (
        f"expected int32 [10, -12], got {q_b}"
    )
    q_w = torch.tensor([[1, 2, 3], [-4, 0, 5]], dtype=torch.int8)
    shifted = student.call("shift_bias", q_b, q_w, -2)
    assert shifted.dtype == torch.int32 and shifted.tolist() == [22, -10], (
        f"10 + 2 * 6 = 22 and -12 + 2 * 1 = -10 as int32, got {shifted}"
    )
    q_x = torch.tensor([[100, 100, 100]], dtype=torch.int8)
    got = student.call("quantized_linear", q_x, q_w, shifted, 0.1, w_scale, 0.25, 10)
    assert got.dtype == torch.int8 and got.tolist() == [[127, 19]], (
        f"acc = [622, 90] (in int32), times M = [0.2, 0.1], rounded, plus 10, clamped: "
        f"int8 [[127, 19]], got {got}"
    )


def _ste_gradient(w, g):
    """Run in your kernel: the gradient fake_quantize_ste(w, 2) passes back for upstream g."""
    w = w.clone().requires_grad_(True)
    fake_quantize_ste(w, 2).backward(g)  # noqa: F821 - the notebook's function
    return w.grad


@pytest.mark.points(1)
def test_fake_quantize_ste_public(student):
    """2 bits: levels -S_c, 0, S_c; the gradient passes straight through."""
    w = torch.tensor([[0.9, -0.3, 0.2], [0.1, 0.06, -0.02]])
    got = student.call("fake_quantize_ste", w, 2)
    assert torch.allclose(got, torch.tensor([[0.9, 0.0, 0.0], [0.1, 0.1, 0.0]])), (
        f"expected [[0.9, 0, 0], [0.1, 0.1, 0]], got {got.tolist()}"
    )
    grad = student.drive(
        _ste_gradient,
        w, torch.ones_like(w) * 2,
    )
    assert grad is not None and torch.equal(grad, torch.full_like(w, 2.0)), (
        f"the gradient should pass straight through (all 2.0 here), got {grad}"
    )


@pytest.mark.points(1)
def test_ptq_int8_public(student):
    """The shipped CNN(16, 32, 64), calibrated on 64 training images: int8 conv weights."""
    state = nncourse.load_pretrained("cnn_16_32_64").state_dict()
    x_train, _, _, _ = nncourse.load_digits_split()
    got = student.with_timeout(60).call(
        "ptq_int8", kit_model("make_cnn", channels=(16, 32, 64), state_dict=state), x_train[:64])
    weight = got.state_dict.get("module.conv1.weight")
    assert weight is not None and weight.dtype == torch.qint8, (
        "the converted model's module.conv1.weight should be a torch.qint8 tensor"
    )


@pytest.mark.points(1)
def test_dynamic_quantize_public(student):
    """Every Linear of the MLP holds qint8 packed weights."""
    got = student.call("dynamic_quantize", kit_model("make_mlp", hidden=(256, 128)))
    for name in ["fc1", "fc2", "fc3"]:
        packed = got.state_dict.get(f"{name}._packed_params._packed_params")
        assert packed is not None and packed[0].dtype == torch.qint8, (
            f"{name} should be a dynamically quantized Linear with torch.qint8 weights"
        )


@pytest.mark.points(1)
def test_kmeans_quantize_model_public(student):
    """2 bits: every Linear weight of a small MLP takes at most 4 values."""
    got = student.call("kmeans_quantize_model", kit_model("make_mlp", hidden=(8,)), 2)
    for name in ["fc1", "fc2"]:
        values = got.state_dict[f"{name}.weight"].unique().numel()
        assert values <= 4, f"{name}.weight should take at most 4 values, it takes {values}"


@pytest.mark.points(1)
def test_qat_train_public(student):
    """One epoch of 2-bit QAT on a tiny CNN: plain layers, at most 3 values per output channel
    (levels -S_c, 0, S_c)."""
    x_train, y_train, _, _ = nncourse.load_digits_split()
    got = student.with_timeout(60).call(
        "qat_train", kit_model("make_cnn", channels=(4, 4, 4)), x_train[:128], y_train[:128],
        bits=2, epochs=1)
    for name in ["conv1", "conv2", "conv3", "fc"]:
        weight = got.state_dict.get(f"{name}.weight")
        assert weight is not None, (
            f"{name}.weight is missing: remove the parametrizations (leave_parametrized=True)"
        )
        most = max(row.unique().numel() for row in weight.flatten(1))
        assert most <= 3, f"{name}.weight has a channel with {most} values, at most 3 expected"


_LAYERS = {"conv1": (16, 1, 3, 3), "conv2": (32, 16, 3, 3), "conv3": (64, 32, 3, 3), "fc": (10, 64)}


@pytest.mark.points(1)
def test_quantize_to_budget_public(student):
    """The shipped CNN(16, 32, 64) at a budget of 8,000 bytes: one entry per Conv2d/Linear layer
    in the notebook's format (bits 1-8, uint8 codes of ceil(n * bits / 8) bytes, one float16
    scale and one uint8 zero point per group), codes, scales and zero points within 8,000 bytes."""
    budget = 8_000
    x_train, y_train, _, _ = nncourse.load_digits_split()
    state = nncourse.load_pretrained("cnn_16_32_64").state_dict()
    got = student.with_timeout(30).call(
        "quantize_to_budget", kit_model("make_cnn", channels=(16, 32, 64), state_dict=state),
        x_train, y_train, budget)
    assert isinstance(got, dict) and sorted(got) == sorted(_LAYERS), (
        f"expected a dict keyed {sorted(_LAYERS)}, got "
        f"{sorted(got) if isinstance(got, dict) else type(got).__name__}")
    used = 0
    for name, shape in _LAYERS.items():
        entry, n = got[name], math.prod(shape)
        assert isinstance(entry, dict) and set(entry) == {
            "bits", "group_size", "codes", "scale", "zero_point"}, (
            f"{name}: expected a dict with keys bits, group_size, codes, scale, zero_point")
        bits, group_size = entry["bits"], entry["group_size"]
        assert type(bits) is int and 1 <= bits <= 8, f"{name}: bits {bits!r} is not an int 1-8"
        assert type(group_size) is int and 1 <= group_size <= n, (
            f"{name}: group_size {group_size!r} is not an int from 1 to {n}")
        groups = math.ceil(n / group_size)
        for key, dtype, length in [("codes", torch.uint8, math.ceil(n * bits / 8)),
                                   ("scale", torch.float16, groups),
                                   ("zero_point", torch.uint8, groups)]:
            value = entry[key]
            assert (isinstance(value, torch.Tensor) and value.dtype == dtype
                    and tuple(value.shape) == (length,)), (
                f"{name}: {key} should be a 1-D {dtype} tensor of {length} values, got "
                f"{getattr(value, 'dtype', type(value).__name__)} "
                f"{tuple(getattr(value, 'shape', ()))}")
            used += value.numel() * value.element_size()
    assert used <= budget, f"the packed weights take {used:,} bytes, over the budget of {budget:,}"


@pytest.mark.points(1)
def test_quantize_layer_public(student):
    """2 bits, groups of 3: [-1, 0.5] -> scale 0.5, zero point 2, codes 3, 0, 2 (0.5 rounds to 0);
    [0, 0.6] -> scale 0.2 in float16, zero point 0, codes 0, 2, 3; packed in 2 bytes."""
    w = torch.tensor([[0.5, -1.0, 0.25], [0.0, 0.3, 0.6]])
    got = student.call("quantize_layer", w, 2, 3)
    scales = [0.5, torch.tensor(0.2).half().item()]
    assert got["scale"].dtype == torch.float16 and got["scale"].tolist() == scales, (
        f"expected float16 scales [0.5, 0.2], got {got['scale']}")
    assert got["zero_point"].dtype == torch.uint8 and got["zero_point"].tolist() == [2, 0], (
        f"expected uint8 zero points [2, 0], got {got['zero_point']}")
    assert got["codes"].dtype == torch.uint8 and got["codes"].tolist() == [35, 14], (
        f"codes 3, 0, 2, 0, 2, 3 at 2 bits, least significant first: bytes [35, 14], got "
        f"{got['codes']}")
