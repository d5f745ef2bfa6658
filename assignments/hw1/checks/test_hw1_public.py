"""Public checks for homework 1: tiny fixed cases you can verify by hand.

Convention: MAC = multiply-accumulates of Conv2d and Linear layers only, FLOP = 2 x MAC, bias
excluded, one forward of the whole input (batch included). Section 8's table gives the FLOPs per
element of the other layers; an encoder layer's MACs are its weight matmuls, with QK^T and AV
reported apart.

The hidden checks test the same properties on other shapes, drawn at grading time.
"""

from __future__ import annotations

import math

import pytest
import torch

from grader.checks import kit_model, layer, probe, seq


@pytest.mark.points(1)
def test_count_params_public(student):
    """Weights and biases; BatchNorm2d(C) has 2C parameters (its running stats are buffers)."""
    got = student.call("count_params", layer("Linear", 3, 2))
    assert got == 8, f"nn.Linear(3, 2) has 3*2 weights + 2 biases = 8 parameters, got {got}"
    got = student.call("count_params", layer("Conv2d", 2, 4, 3, bias=False))
    assert got == 72, f"nn.Conv2d(2, 4, 3, bias=False) has 4*2*3*3 = 72 parameters, got {got}"
    got = student.call("count_params", layer("BatchNorm2d", 3))
    assert got == 6, f"nn.BatchNorm2d(3) has 2*3 = 6 parameters (buffers excluded), got {got}"
    got = student.call("count_params", seq(layer("Linear", 3, 2), layer("ReLU")))
    assert got == 8, f"Linear(3, 2) followed by ReLU has 8 parameters, got {got}"


@pytest.mark.points(1)
def test_linear_macs_public(student):
    """MACs = prod(leading dims) * in * out."""
    for shape, expected in [((3,), 6), ((4, 3), 24), ((2, 5, 3), 60)]:
        got = student.call("linear_macs", 3, 2, shape)
        assert got == expected, f"linear_macs(3, 2, {shape}) should be {expected}, got {got}"


@pytest.mark.points(1)
def test_conv2d_output_hw_public(student):
    """floor((H + 2p - d(k-1) - 1) / s) + 1 per dimension."""
    cases = [
        ((5, 5, 3), {}, (3, 3)),
        ((5, 5, 3), {"stride": 2, "padding": 1}, (3, 3)),
        ((7, 7, 3), {"dilation": 2}, (3, 3)),
        ((6, 4, (3, 1)), {"stride": (2, 1)}, (2, 4)),
    ]
    for args, kwargs, expected in cases:
        got = student.call("conv2d_output_hw", *args, **kwargs)
        assert tuple(got) == expected, (
            f"conv2d_output_hw(*{args}, **{kwargs}) should be {expected}, got {got}"
        )


@pytest.mark.points(1)
def test_conv2d_macs_public(student):
    """MACs = batch * C_out * H_out * W_out * (C_in / groups) * k_h * k_w."""
    cases = [
        ({}, 648),  # 4 * 3 * 3 * 2 * 3 * 3
        ({"groups": 2}, 324),
        ({"batch": 3}, 3 * 648),
        ({"stride": 2}, 4 * 2 * 2 * 2 * 3 * 3),
    ]
    for kwargs, expected in cases:
        got = student.call("conv2d_macs", 2, 4, 3, (5, 5), **kwargs)
        assert got == expected, (
            f"conv2d_macs(2, 4, 3, (5, 5), **{kwargs}) should be {expected}, got {got}"
        )
    got = student.call("conv2d_macs", 2, 4, 1, (5, 5))
    assert got == 200, f"point-wise conv2d_macs(2, 4, 1, (5, 5)) should be 4*5*5*2 = 200, got {got}"


@pytest.mark.points(1)
def test_flops_public(student):
    """FLOP = 2 x MAC."""
    got = student.call("flops", 10)
    assert got == 20, f"flops(10) should be 20, got {got}"


@pytest.mark.points(1)
def test_model_macs_public(student):
    """Per-layer MACs by qualified name; the model's training flags are restored."""
    model = seq(layer("Conv2d", 1, 2, 3, bias=False), layer("Flatten"), layer("Linear", 8, 3),
                training=True)
    got, (after, _) = student.call_inspect("model_macs", model, (1, 1, 4, 4))
    expected = {"0": 2 * 2 * 2 * 1 * 3 * 3, "2": 8 * 3}
    assert got == expected, f"model_macs should be {expected}, got {got}"
    assert all(after.training.values()), (
        "the model was in train mode: model_macs must put it back in train mode"
    )


@pytest.mark.points(1)
def test_depthwise_separable_public(student):
    """Depth-wise 3x3 (groups=2, 2 -> 2), then point-wise 1x1 (2 -> 4), no bias."""
    got = student.call("depthwise_separable", 2, 4, 3)
    convs = got.leaves()
    assert [info.type for info in convs] == ["Conv2d", "Conv2d"], (
        f"expected exactly two Conv2d layers, got {[info.type for info in convs]}"
    )
    depthwise, pointwise = (info.config for info in convs)
    want = {"in_channels": 2, "out_channels": 2, "kernel_size": (3, 3), "groups": 2, "bias": False}
    have = {key: depthwise.get(key) for key in want}
    assert have == want, f"the depth-wise conv should have {want}, got {have}"
    want = {"in_channels": 2, "out_channels": 4, "kernel_size": (1, 1), "groups": 1, "bias": False}
    have = {key: pointwise.get(key) for key in want}
    assert have == want, f"the point-wise conv should have {want}, got {have}"


@pytest.mark.points(1)
def test_separable_cost_ratio_public(student):
    """1/c_out + 1/k^2."""
    got = student.call("separable_cost_ratio", 4, 8, 3)
    assert math.isclose(got, 1 / 8 + 1 / 9), f"expected 1/8 + 1/9, got {got}"


@pytest.mark.points(1)
def test_measure_latency_public(student):
    """warmup + reps calls; {"median_ms", "p10_ms", "p90_ms"} with p10 <= median <= p90."""
    got, (after, _) = student.call_inspect(
        "measure_latency", probe("CallCounter"), torch.zeros(1), warmup=2, reps=3
    )
    assert int(after.state_dict["calls"]) == 5, (
        f"warmup=2, reps=3 should call the model 5 times, got {int(after.state_dict['calls'])}"
    )
    assert 0 < got["p10_ms"] <= got["median_ms"] <= got["p90_ms"], (
        f"expected 0 < p10_ms <= median_ms <= p90_ms, got {got}"
    )


@pytest.mark.points(1)
def test_arithmetic_intensity_public(student):
    """Linear: 2*B*I*O / (bytes*(B*I + I*O + B*O)); element-wise: flops / (2 * bytes)."""
    got = student.call("arithmetic_intensity_linear", 1, 2, 2, bytes_per_element=1)
    assert math.isclose(got, 1.0), f"2*1*2*2 FLOPs / (2 + 4 + 2) bytes = 1.0, got {got}"
    got = student.call("arithmetic_intensity_elementwise", 1)
    assert math.isclose(got, 0.25), f"ReLU in fp16: 1 FLOP / (2 * 2 bytes) = 0.25, got {got}"


@pytest.mark.points(1)
def test_roofline_public(student):
    """min(peak, ai * bandwidth); the ridge point is peak / bandwidth = 5 FLOP/byte here."""
    for ai, attainable, side in [(1.0, 2.0, "memory"), (10.0, 10.0, "compute")]:
        got = student.call("roofline", ai, 10.0, 2.0)
        assert math.isclose(got, attainable), (
            f"roofline({ai}, 10.0, 2.0) = min(10, {ai} * 2) = {attainable}, got {got}"
        )
        got = student.call("bound", ai, 10.0, 2.0)
        assert got == side, f"bound({ai}, 10.0, 2.0) should be {side!r} (ridge 5), got {got!r}"


@pytest.mark.points(1)
def test_fixed_conv_macs_public(student):
    """N * C_out * H_out * W_out * (C_in / groups) * k_h * k_w."""
    got = student.call("fixed_conv_macs", layer("Conv2d", 2, 4, 3), (1, 4, 3, 3))
    assert got == 648, f"standard conv: 1*4*3*3*2*3*3 = 648, got {got}"
    got = student.call("fixed_conv_macs", layer("Conv2d", 4, 4, 1, groups=2), (1, 4, 1, 1))
    assert got == 8, f"groups=2: each output reads 4/2 = 2 channels, 1*4*1*1*2 = 8, got {got}"


@pytest.mark.points(1)
def test_bug_counterexample_public(student):
    """A valid nn.Conv2d; the FlopCo-style counter must be wrong on it."""
    kwargs = student.call("bug_counterexample")
    conv = torch.nn.Conv2d(**kwargs)
    per_output_buggy = 1 if conv.groups != 1 else conv.in_channels
    assert per_output_buggy != conv.in_channels // conv.groups, (
        f"on nn.Conv2d(**{kwargs}) the FlopCo-style counter is right: pick 1 < groups < in_channels"
    )


@pytest.mark.points(1)
def test_elementwise_flops_public(student):
    """FLOPs per element: ReLU 1, GELU 5 (tanh form 9), LayerNorm 7, BatchNorm 7 in training
    mode and 2 in eval mode."""
    cases = [
        (layer("ReLU"), (2, 3), 6, "ReLU: 1 per element"),
        (layer("GELU"), (2, 3), 30, "GELU: 5 per element"),
        (layer("GELU", approximate="tanh"), (2, 3), 54, "GELU, tanh form: 9 per element"),
        (layer("LayerNorm", 3), (2, 3), 42, "LayerNorm: 7 per element"),
        (layer("BatchNorm2d", 3, training=True), (2, 3, 4, 4), 672, "training BatchNorm: 7 x 96"),
        (layer("BatchNorm2d", 3), (2, 3, 4, 4), 192, "eval BatchNorm: 2 x 96"),
    ]
    for module, shape, expected, rule in cases:
        got = student.call("elementwise_flops", module, shape)
        assert got == expected, f"{rule} = {expected} FLOPs on {shape}, got {got}"


@pytest.mark.points(1)
def test_model_flops_public(student):
    """2 x MACs plus the table's layers; a residual block adds 1 FLOP per output element."""
    got = student.call("model_flops", kit_model("make_mlp", hidden=(4, 3)), (2, 1, 8, 8))
    assert got == 1206, (
        f"make_mlp((4, 3)) at batch 2: 2 x 2 x (64*4 + 4*3 + 3*10) + 2 x (4 + 3) ReLU = 1206, "
        f"got {got}"
    )
    tiny = kit_model("make_resnet", channels=2, blocks=1)
    got = student.call("model_flops", tiny, (1, 1, 2, 2))
    assert got == 840, (
        f"make_resnet(channels=2, blocks=1) on (1, 1, 2, 2): 760 conv and Linear FLOPs + "
        f"3 BatchNorms x 2 x 8 + 3 ReLUs x 8 + one addition x 8 = 840, got {got}"
    )
    got = student.call("model_flops", tiny, (1, 1, 2, 2), fold_bn=True)
    assert got == 792, f"the same with BatchNorm folded (0): 840 - 48 = 792, got {got}"


@pytest.mark.points(1)
def test_encoder_layer_macs_public(student):
    """d_model 4, 2 heads, feed-forward 8, 3 tokens: in_proj 3*4*12, out_proj 3*4*4, linear1 and
    linear2 3*4*8, QK^T and AV 2 heads * 3*3 * 2 each."""
    encoder = layer("TransformerEncoderLayer", 4, 2, dim_feedforward=8, batch_first=True)
    got = student.call("encoder_layer_macs", encoder, (1, 3, 4))
    expected = {"in_proj": 144, "out_proj": 48, "linear1": 96, "linear2": 96, "qk": 36, "av": 36}
    assert got == expected, f"expected {expected}, got {got}"


@pytest.mark.points(1)
def test_attention_model_macs_public(student):
    """Linear(2, 4), an encoder layer (sequence first), Linear(4, 3) on 3 tokens."""
    model = seq(layer("Linear", 2, 4), layer("TransformerEncoderLayer", 4, 2, dim_feedforward=8),
                layer("Linear", 4, 3))
    got = student.call("attention_model_macs", model, (3, 1, 2))
    expected = {"0": 24, "1.self_attn.in_proj": 144, "1.self_attn.out_proj": 48,
                "1.linear1": 96, "1.linear2": 96, "2": 36}
    assert got == expected, f"expected {expected}, got {got}"


@pytest.mark.points(1)
def test_model_macs_refuses_attention_public(student):
    """model_macs raises a ValueError naming nn.MultiheadAttention instead of counting it as 0."""
    model = seq(layer("Linear", 4, 8), layer("TransformerEncoderLayer", 8, 2, dim_feedforward=16))
    try:
        got = student.call("model_macs", model, (3, 1, 4))
    except AssertionError as error:  # the student's exception, as the grader reports it
        assert "ValueError" in str(error) and "attention" in str(error).lower(), (
            f"expected a ValueError that names nn.MultiheadAttention, got {error}"
        )
        return
    raise AssertionError(f"model_macs should refuse a model with attention, it returned {got}")


@pytest.mark.points(1)
def test_flopco_prediction_public(student):
    """FlopCo: one sample; groups != 1 read as one input channel; bias adds C_out*H_out*W_out
    (conv) or in_features (Linear)."""
    model = seq(layer("Conv2d", 4, 4, 3, groups=2), layer("Flatten"), layer("Linear", 4, 2))
    got = student.call("flopco_prediction", model, (2, 4, 3, 3))
    expected = {"0": 2 * 1 * 1 * 4 * 1 * 9 + 4, "2": 2 * 4 * 2 + 4}
    assert got == expected, (
        f"expected {expected} (conv: 2 x 1*1*4*1*3*3 + 4 bias outputs; Linear: 2 x 4*2 + "
        f"4 in_features), got {got}"
    )


def _bytes_of_dtypes(names):
    """Run in the notebook's kernel: dtype_bytes of each torch dtype named."""
    import torch

    return [dtype_bytes(getattr(torch, name)) for name in names]  # noqa: F821


@pytest.mark.points(1)
def test_dtype_bytes_public(student):
    """bits / 8: int8 1 byte, float16 2, float32 4, float64 8."""
    got = student.drive(_bytes_of_dtypes, ["int8", "float16", "float32", "float64"])
    assert got == [1, 2, 4, 8], f"int8, float16, float32, float64 take 1, 2, 4, 8 bytes, got {got}"


@pytest.mark.points(1)
def test_format_bytes_public(student):
    """Below 1024: "n B"; otherwise two decimals in KiB, MiB, GiB (powers of 1024)."""
    for n, expected in [(1000, "1000 B"), (1536, "1.50 KiB"), (3 * 1024**3, "3.00 GiB")]:
        got = student.call("format_bytes", n)
        assert got == expected, f"format_bytes({n}) should be {expected!r}, got {got!r}"


@pytest.mark.points(1)
def test_model_size_bytes_public(student):
    """BatchNorm2d(16): 32 float32 parameters; buffers 32 float32 + one int64 counter."""
    got = student.call("model_size_bytes", layer("BatchNorm2d", 16))
    expected = {"parameters": 128, "buffers": 136}
    assert got == expected, (
        f"nn.BatchNorm2d(16) holds 2 x 16 float32 parameters (128 bytes) and 2 x 16 float32 "
        f"running statistics + an int64 counter (136 bytes): expected {expected}, got {got}"
    )


@pytest.mark.points(1)
def test_activation_peak_bytes_public(student):
    """make_mlp((16, 8)) at batch 2: relu1's input and output, 2 x 16 float32 each, 256 bytes."""
    got = student.call("activation_peak_bytes", kit_model("make_mlp", hidden=(16, 8)),
                       (2, 1, 8, 8))
    assert got == 256, f"expected 2 x (2 x 16 x 4) = 256 bytes, got {got}"


@pytest.mark.points(1)
def test_forward_peak_bytes_public(student):
    """Linear(3, 4) on a (2, 3) input allocates its output, 2 x 4 float32; two forwards."""
    got = student.call("forward_peak_bytes", layer("Linear", 3, 4), torch.zeros(2, 3))
    assert got == 32, f"Linear(3, 4) on (2, 3) allocates its 2 x 4 float32 output: 32, got {got}"
    _, (after, _) = student.call_inspect("forward_peak_bytes", probe("CallCounter"),
                                         torch.zeros(3))
    calls = int(after.state_dict["calls"])
    assert calls == 2, f"one warm-up forward and one measured: 2 calls, got {calls}"


@pytest.mark.points(1)
def test_roofline_throughput_public(student):
    """Linear(2, 2), one byte per element, peak 8 FLOP/s, bandwidth 2 B/s: at batch 1 the
    intensity is 1 FLOP/byte, 2 FLOP/s attainable, 8 FLOPs per sample: 0.25 samples/s."""
    got = student.call("roofline_throughput", 1, 2, 2, 8.0, 2.0, bytes_per_element=1)
    assert math.isclose(got, 0.25), f"expected 2 FLOP/s / 8 FLOPs = 0.25 samples/s, got {got}"


@pytest.mark.points(1)
def test_throughput_public(student):
    """One entry per batch size; (warmup + reps) calls per batch size."""
    got, (after, *_) = student.call_inspect("throughput", probe("CallCounter"), (3,), [1, 4],
                                            warmup=1, reps=2)
    assert sorted(got) == ["1", "4"], f"expected the batch sizes 1 and 4 as keys, got {got}"
    assert all(value > 0 for value in got.values()), f"samples per second are > 0, got {got}"
    calls = int(after.state_dict["calls"])
    assert calls == 2 * (1 + 2), f"2 batch sizes x (1 + 2) calls = 6, got {calls}"
