"""Hidden checks for homework 1: measures of effectiveness.

Convention (stated once in the notebook and used by every check): MAC = multiply-accumulates of
Conv2d and Linear layers only, FLOP = 2 x MAC, bias excluded, one forward of the whole input
(batch included). It is the convention of torch.utils.flop_counter.FlopCounterMode, which every
MAC check below uses as a second oracle on a real layer built in the grader's process.

Sections 8-10 add, each stated again above its checks: FLOPs per element of activations,
normalization layers and residual additions (the notebook's table); a transformer encoder
layer's weight matmuls (in_proj, out_proj, linear1, linear2) as its MACs, with the attention
products QK^T and AV reported apart; and what the real FlopCo package (flopco-pytorch 0.1.4)
reports, run in the grader's process as the second oracle.

Every input is drawn per run from the `rng` / `torch_rng` fixtures, so that answers differ from
the notebook's and the public checks' fixed cases.
"""

from __future__ import annotations

import copy
import inspect
import math
import random
from itertools import pairwise

import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import nncourse
from grader.checks import StudentError, kit_model, layer, oracles_agree, probe, seq

# ------------------------------------------------------------------------------------------
# Oracles: the formulas, written independently of the reference notebook.


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _out_hw(h, w, kernel_size, stride=1, padding=0, dilation=1) -> tuple[int, int]:
    """PyTorch's Conv2d output size: floor((H + 2p - d(k-1) - 1) / s) + 1 per dimension."""
    sizes = zip((h, w), *map(_pair, (kernel_size, stride, padding, dilation)), strict=True)
    return tuple((x + 2 * p - d * (k - 1) - 1) // s + 1 for x, k, s, p, d in sizes)


def _conv_macs(c_in, c_out, kernel_size, input_hw, stride=1, padding=0, dilation=1, groups=1,
               batch=1) -> int:
    """batch * C_out * H_out * W_out * (C_in / groups) * k_h * k_w."""
    h_out, w_out = _out_hw(*input_hw, kernel_size, stride, padding, dilation)
    kh, kw = _pair(kernel_size)
    return batch * c_out * h_out * w_out * (c_in // groups) * kh * kw


def _counted_flops(module: nn.Module, x: torch.Tensor) -> int:
    """FLOPs FlopCounterMode counts for one forward (2 x MAC, bias and BatchNorm excluded)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops()


def _rel_close(got, expected: float, rel: float = 1e-9) -> bool:
    return isinstance(got, (int, float)) and math.isclose(got, expected, rel_tol=rel)


def _draw_conv(rng: random.Random, kind: str) -> dict:
    """One valid conv2d_macs configuration of the given kind (keyword arguments)."""
    c_in = rng.choice([3, 4, 6, 8, 12, 16])
    c_out = rng.choice([5, 8, 10, 12, 24])
    kernel, stride, dilation, groups, batch = rng.choice([2, 3, 5]), 1, 1, 1, 1
    if kind == "group":
        c_in = rng.choice([8, 12, 16, 24])
        groups = rng.choice([g for g in (2, 4) if g < c_in])
        c_out = groups * rng.randint(1, 5)
    elif kind == "depthwise":
        groups = c_in = rng.choice([3, 6, 8, 12, 16])
        c_out = c_in * rng.choice([1, 1, 2])
    elif kind == "pointwise":
        kernel = 1
    elif kind == "stride":
        stride = rng.choice([2, 3, (2, 1), (1, 2)])
    elif kind == "dilation":
        dilation = rng.choice([2, 3, (2, 1)])
    elif kind == "batch":
        batch = rng.randint(2, 7)
    elif kind == "tuple":
        kernel = rng.choice([(3, 1), (1, 3), (3, 5), (2, 3)])
    elif kind == "mixed":
        c_in = rng.choice([8, 12, 16])
        groups = rng.choice([1, 2, 4, c_in])
        c_out = groups * rng.randint(1, 3)
        stride, dilation, batch = rng.choice([1, 2]), rng.choice([1, 2]), rng.randint(2, 5)
    padding = rng.randint(0, max(_pair(kernel)) // 2 + 1)
    reach = [d * (k - 1) + 1 for k, d in zip(_pair(kernel), _pair(dilation), strict=True)]
    input_hw = tuple(r + rng.randint(2, 14) for r in reach)
    return dict(c_in=c_in, c_out=c_out, kernel_size=kernel, input_hw=input_hw, stride=stride,
                padding=padding, dilation=dilation, groups=groups, batch=batch)


def _check_conv_macs(student, cfg: dict) -> None:
    expected = _conv_macs(**cfg)
    conv = nn.Conv2d(cfg["c_in"], cfg["c_out"], cfg["kernel_size"], stride=cfg["stride"],
                     padding=cfg["padding"], dilation=cfg["dilation"], groups=cfg["groups"])
    x = torch.zeros(cfg["batch"], cfg["c_in"], *cfg["input_hw"])
    oracles_agree(2 * expected == _counted_flops(conv, x), f"FlopCounterMode on {cfg}")
    got = student.call("conv2d_macs", **cfg)
    assert got == expected, (
        f"conv2d_macs({cfg}) should be batch * C_out * H_out * W_out * (C_in / groups) * k_h * k_w"
        f" = {expected} MACs, got {got}"
    )


# ------------------------------------------------------------------------------------------
# 1. Parameters


def _draw_layer(rng: random.Random) -> tuple[str, tuple, dict, int]:
    """(class name, args, kwargs, expected parameter count) of a random layer."""
    kind = rng.choice(["Linear", "Conv2d", "BatchNorm2d", "LayerNorm"])
    if kind == "Linear":
        i, o, bias = rng.randint(3, 40), rng.randint(2, 30), rng.random() < 0.6
        return kind, (i, o), {"bias": bias}, i * o + o * bias
    if kind == "Conv2d":
        groups = rng.choice([1, 2, 3, 4])
        c_in, c_out = groups * rng.randint(1, 6), groups * rng.randint(1, 6)
        k, bias = rng.choice([1, 2, 3, (3, 1), (1, 5)]), rng.random() < 0.5
        kh, kw = _pair(k)
        return kind, (c_in, c_out, k), {"groups": groups, "bias": bias}, (
            c_out * (c_in // groups) * kh * kw + c_out * bias
        )
    if kind == "BatchNorm2d":
        c, affine = rng.randint(3, 64), rng.random() < 0.75
        return kind, (c,), {"affine": affine}, 2 * c * affine
    shape = [rng.randint(2, 12) for _ in range(rng.randint(1, 2))]
    affine = rng.random() < 0.75
    return kind, (shape,), {"elementwise_affine": affine}, 2 * math.prod(shape) * affine


@pytest.mark.points(2)
def test_count_params_layers(student, rng):
    """All nn.Parameter scalars; BatchNorm's running statistics are buffers, not parameters."""
    for _ in range(10):
        name, args, kwargs, expected = _draw_layer(rng)
        local = getattr(nn, name)(*args, **kwargs)
        oracles_agree(sum(p.numel() for p in local.parameters()) == expected, f"{local}")
        got = student.call("count_params", layer(name, *args, **kwargs))
        assert got == expected, (
            f"count_params(nn.{name}(*{args}, **{kwargs})) should be {expected} "
            f"(parameters only, buffers excluded), got {got}"
        )


@pytest.mark.points(1)
def test_count_params_sequential(student, rng):
    """A Sequential's parameters are the sum over its layers; ReLU and Flatten have none."""
    for _ in range(3):
        c_in, c_mid, n_out = rng.randint(1, 6), rng.randint(3, 20), rng.randint(2, 12)
        specs = [("Conv2d", (c_in, c_mid, 3), {"bias": rng.random() < 0.5}),
                 ("BatchNorm2d", (c_mid,), {}), ("ReLU", (), {}),
                 ("AdaptiveAvgPool2d", (1,), {}), ("Flatten", (), {}),
                 ("Linear", (c_mid, n_out), {})]
        local = nn.Sequential(*[getattr(nn, n)(*a, **k) for n, a, k in specs])
        expected = sum(p.numel() for p in local.parameters())
        got = student.call("count_params", seq(*[layer(n, *a, **k) for n, a, k in specs]))
        described = ", ".join(f"{n}{a}" for n, a, _ in specs)
        assert got == expected, (
            f"count_params of Sequential({described}) should be {expected} "
            f"(BatchNorm buffers excluded), got {got}"
        )


# ------------------------------------------------------------------------------------------
# 2. Linear MACs


@pytest.mark.points(3)
def test_linear_macs(student, rng):
    """MACs = prod(leading dims) * in * out for an input of shape (..., in); bias excluded."""
    for leading_dims in [0, 0, 1, 1, 1, 2, 2, 2, 2]:
        i, o = rng.randint(3, 64), rng.randint(2, 48)
        shape = (*[rng.randint(2, 9) for _ in range(leading_dims)], i)
        expected = math.prod(shape[:-1]) * i * o
        flops_counted = _counted_flops(nn.Linear(i, o), torch.zeros(shape))
        oracles_agree(2 * expected == flops_counted, f"FlopCounterMode on Linear {shape}")
        got = student.call("linear_macs", i, o, shape)
        assert got == expected, (
            f"linear_macs({i}, {o}, {shape}) should be (product of the leading dimensions "
            f"{shape[:-1]}) * {i} * {o} = {expected} MACs, got {got}"
        )


# ------------------------------------------------------------------------------------------
# 3. Convolutions


@pytest.mark.points(2)
def test_conv2d_output_hw(student, rng):
    """floor((H + 2p - d(k-1) - 1) / s) + 1 per dimension; ints or (h, w) pairs."""
    for _ in range(10):
        k = rng.choice([1, 2, 3, 5, (3, 1), (1, 3), (2, 5)])
        s = rng.choice([1, 2, 3, (2, 1), (1, 3)])
        p = rng.choice([0, 1, 2, (1, 0), (0, 2)])
        d = rng.choice([1, 1, 2, 3, (2, 1)])
        reach = [dd * (kk - 1) + 1 for kk, dd in zip(_pair(k), _pair(d), strict=True)]
        h, w = (r + rng.randint(0, 15) for r in reach)
        expected = _out_hw(h, w, k, s, p, d)
        real = nn.Conv2d(1, 1, k, stride=s, padding=p, dilation=d)(torch.zeros(1, 1, h, w))
        oracles_agree(tuple(real.shape[-2:]) == expected, f"nn.Conv2d output on {h}x{w}")
        got = student.call("conv2d_output_hw", h, w, k, stride=s, padding=p, dilation=d)
        assert tuple(got) == expected, (
            f"conv2d_output_hw({h}, {w}, kernel_size={k}, stride={s}, padding={p}, "
            f"dilation={d}) should be {expected} (what nn.Conv2d produces), got {got}"
        )


@pytest.mark.points(2)
def test_conv2d_macs_standard(student, rng):
    """Standard convs (groups=1), with padding: MACs = C_out*H_out*W_out*C_in*k_h*k_w."""
    for _ in range(8):
        _check_conv_macs(student, _draw_conv(rng, "standard"))


@pytest.mark.points(3)
def test_conv2d_macs_grouped_depthwise_pointwise(student, rng):
    """Each output element reads C_in / groups channels: group, depth-wise, point-wise convs."""
    for kind in ["group", "group", "group", "depthwise", "depthwise", "depthwise",
                 "pointwise", "pointwise", "pointwise"]:
        _check_conv_macs(student, _draw_conv(rng, kind))


@pytest.mark.points(2)
def test_conv2d_macs_stride_dilation_batch(student, rng):
    """Stride and dilation change H_out/W_out; the batch multiplies the MACs."""
    for kind in ["stride", "stride", "dilation", "dilation", "batch", "batch", "tuple",
                 "mixed", "mixed", "mixed"]:
        _check_conv_macs(student, _draw_conv(rng, kind))


@pytest.mark.points(1)
def test_flops(student, rng):
    """FLOP = 2 x MAC."""
    for _ in range(8):
        macs = rng.randint(1, 10**12)
        got = student.call("flops", macs)
        assert got == 2 * macs, f"flops({macs}) should be 2 x {macs} = {2 * macs}, got {got}"


# ------------------------------------------------------------------------------------------
# 3.3 model_macs with hooks


def _draw_cnn(rng: random.Random) -> tuple[tuple[int, int, int], tuple[int, int, int, int]]:
    channels = (rng.choice([4, 6, 8, 12]), rng.choice([8, 10, 16]), rng.choice([12, 16, 20, 24]))
    shape = (rng.randint(2, 4), 1, rng.randint(4, 12), rng.randint(4, 12))
    return channels, shape


def _cnn_macs(channels, shape) -> dict[str, int]:
    """nncourse.make_cnn: 3x3 convs with padding 1, a 2x2 max-pool before conv3, fc to 10."""
    (c1, c2, c3), (n, _, h, w) = channels, shape
    return {"conv1": n * c1 * h * w * 9, "conv2": n * c2 * h * w * c1 * 9,
            "conv3": n * c3 * (h // 2) * (w // 2) * c2 * 9, "fc": n * c3 * 10}


def _random_state(channels, torch_rng: torch.Generator) -> dict[str, torch.Tensor]:
    """A make_cnn state with distinctive BatchNorm running statistics."""
    state = {}
    for key, value in nncourse.make_cnn(channels).state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.randint(5, 500, (), generator=torch_rng)
        elif key.endswith("running_var"):
            state[key] = torch.rand(value.shape, generator=torch_rng) + 0.5
        else:
            state[key] = torch.randn(value.shape, generator=torch_rng) * 0.3
    return state


@pytest.mark.points(3)
def test_model_macs_per_layer(student, rng):
    """One entry per Conv2d/Linear, keyed by qualified name; MACs for the whole batch."""
    for _ in range(3):
        channels, shape = _draw_cnn(rng)
        expected = _cnn_macs(channels, shape)
        oracle = _counted_flops(nncourse.make_cnn(channels).eval(), torch.zeros(shape))
        oracles_agree(2 * sum(expected.values()) == oracle, f"FlopCounterMode on {channels}")
        model = kit_model("make_cnn", channels=channels, training=True)
        got = student.call("model_macs", model, shape)
        assert got == expected, (
            f"model_macs(make_cnn({channels}), {shape}) should be {expected} "
            f"(one entry per Conv2d and Linear, batch included), got {got}"
        )


@pytest.mark.points(3)
def test_model_macs_leaves_model_as_found(student, rng, torch_rng):
    """Counting must not change the model: training flags restored, BatchNorm stats untouched."""
    for _ in range(2):
        channels, shape = _draw_cnn(rng)
        state = _random_state(channels, torch_rng)
        model = kit_model("make_cnn", channels=channels, state_dict=state, training=True)
        result, (after, _) = student.call_inspect("model_macs", model, shape)
        total = sum(_cnn_macs(channels, shape).values())
        assert sum(result.values()) == total, (
            f"model_macs(make_cnn({channels}), {shape}) should total {total} MACs, "
            f"got {sum(result.values())}"
        )
        in_eval = sorted(name or "<model>" for name, flag in after.training.items() if not flag)
        assert not in_eval, (
            f"the model was in train mode; after model_macs these modules are in eval mode: "
            f"{in_eval}. Restore every module's training flag."
        )
        changed = sorted(k for k, v in state.items() if not torch.equal(after.state_dict[k], v))
        assert not changed, (
            f"model_macs changed {changed}: run the forward in eval mode under no_grad so "
            f"BatchNorm running statistics are left untouched"
        )


# ------------------------------------------------------------------------------------------
# 4. Depth-wise separable


def _draw_separable(rng: random.Random) -> tuple[int, int, int, int, int]:
    k = rng.choice([3, 5, 7])
    return rng.randint(3, 24), rng.randint(4, 40), k, rng.choice([1, 2]), rng.randint(0, k // 2)


@pytest.mark.points(2)
def test_depthwise_separable_structure(student, rng):
    """Depth-wise k x k (groups=c_in, c_in -> c_in, stride, padding), then 1x1 c_in -> c_out."""
    for _ in range(8):
        c_in, c_out, k, s, p = _draw_separable(rng)
        got = student.call("depthwise_separable", c_in, c_out, k, stride=s, padding=p)
        layers = got.leaves()
        types = [info.type for info in layers]
        assert types == ["Conv2d", "Conv2d"], (
            f"depthwise_separable({c_in}, {c_out}, {k}, stride={s}, padding={p}) should hold "
            f"exactly two Conv2d (depth-wise, then point-wise), got {types}"
        )
        depthwise, pointwise = (info.config for info in layers)
        want_dw = dict(in_channels=c_in, out_channels=c_in, kernel_size=(k, k), stride=(s, s),
                       padding=(p, p), dilation=(1, 1), groups=c_in, bias=False)
        want_pw = dict(in_channels=c_in, out_channels=c_out, kernel_size=(1, 1), stride=(1, 1),
                       padding=(0, 0), dilation=(1, 1), groups=1, bias=False)
        for what, want, have in [("depth-wise", want_dw, depthwise),
                                 ("point-wise", want_pw, pointwise)]:
            wrong = {key: have.get(key) for key, value in want.items() if have.get(key) != value}
            assert not wrong, (
                f"depthwise_separable({c_in}, {c_out}, {k}, stride={s}, padding={p}): the "
                f"{what} conv should have {want}; these differ: {wrong}"
            )


@pytest.mark.points(1)
def test_depthwise_separable_output_shape(student, rng, torch_rng):
    """The block maps (N, c_in, H, W) to (N, c_out, H_out, W_out) of the k x k conv."""
    for _ in range(3):
        c_in, c_out, k, s, p = _draw_separable(rng)
        n, h, w = rng.randint(1, 3), rng.randint(k, k + 10), rng.randint(k, k + 10)
        block = student.call("depthwise_separable", c_in, c_out, k, stride=s, padding=p).rebuild()
        try:
            with torch.no_grad():
                out = block(torch.randn(n, c_in, h, w, generator=torch_rng))
        except RuntimeError as error:  # the student's layers do not fit the input
            raise AssertionError(
                f"depthwise_separable({c_in}, {c_out}, {k}, stride={s}, padding={p}) fails on "
                f"an input of shape {(n, c_in, h, w)}: {error}"
            ) from None
        expected = (n, c_out, *_out_hw(h, w, k, s, p))
        assert tuple(out.shape) == expected, (
            f"depthwise_separable({c_in}, {c_out}, {k}, stride={s}, padding={p}) on an input "
            f"of shape {(n, c_in, h, w)} should give {expected}, got {tuple(out.shape)}"
        )


@pytest.mark.points(1)
def test_separable_cost_ratio(student, rng):
    """MACs(separable) / MACs(standard) = 1/c_out + 1/k^2 (same output grid)."""
    for _ in range(8):
        c_in, c_out, k = rng.randint(2, 512), rng.randint(2, 512), rng.choice([1, 3, 5, 7])
        expected = 1 / c_out + 1 / k**2
        hw = (k + 5, k + 7)
        by_macs = (_conv_macs(c_in, c_in, k, hw, groups=c_in)
                   + _conv_macs(c_in, c_out, 1, _out_hw(*hw, k))) / _conv_macs(c_in, c_out, k, hw)
        oracles_agree(math.isclose(by_macs, expected, rel_tol=1e-12), "separable ratio")
        got = student.call("separable_cost_ratio", c_in, c_out, k)
        assert _rel_close(got, expected), (
            f"separable_cost_ratio({c_in}, {c_out}, {k}) should be 1/{c_out} + 1/{k}^2 = "
            f"{expected:.12g}, got {got}"
        )


# ------------------------------------------------------------------------------------------
# 5. Find the bug


def _flopco_style(c_in, groups, output_shape, kernel) -> int:
    """The provided buggy counter: one input channel whenever groups != 1."""
    n, c_out, h, w = output_shape
    return n * c_out * h * w * (1 if groups != 1 else c_in) * kernel[0] * kernel[1]


@pytest.mark.points(2)
def test_fixed_conv_macs(student, rng):
    """N * C_out * H_out * W_out * (C_in / groups) * k_h * k_w, for any groups."""
    for _ in range(10):
        c_in = rng.choice([4, 8, 12, 16])
        groups = rng.choice([1, 2, 4, c_in])
        c_out = groups * rng.randint(1, max(1, 24 // groups))
        k = rng.choice([1, 3, 5, (3, 1)])
        stride, bias = rng.choice([1, 2]), rng.random() < 0.5
        kwargs = dict(stride=stride, groups=groups, bias=bias)
        conv = nn.Conv2d(c_in, c_out, k, **kwargs)
        x = torch.zeros(rng.randint(1, 4), c_in, rng.randint(5, 12), rng.randint(5, 12))
        with torch.no_grad():
            output_shape = tuple(conv(x).shape)
        kh, kw = _pair(k)
        expected = math.prod(output_shape) * (c_in // groups) * kh * kw
        oracles_agree(2 * expected == _counted_flops(conv, x), f"FlopCounterMode on {conv}")
        got = student.call("fixed_conv_macs", layer("Conv2d", c_in, c_out, k, **kwargs),
                           output_shape)
        assert got == expected, (
            f"fixed_conv_macs(nn.Conv2d({c_in}, {c_out}, {k}, groups={groups}), {output_shape}) "
            f"should be N*C_out*H_out*W_out*(C_in/groups)*k_h*k_w = {expected}, got {got}"
        )


@pytest.mark.points(2)
def test_bug_counterexample(student):
    """A valid nn.Conv2d on which the FlopCo-style counter is wrong (1 < groups < C_in)."""
    kwargs = student.call("bug_counterexample")
    assert isinstance(kwargs, dict), f"bug_counterexample() should return a dict, got {kwargs!r}"
    unknown = set(kwargs) - (set(inspect.signature(nn.Conv2d).parameters) - {"device", "dtype"})
    assert not unknown, f"bug_counterexample(): {sorted(unknown)} are not nn.Conv2d arguments"
    try:
        # on the meta device first: nothing is allocated for an absurdly large answer
        size = nn.Conv2d(**kwargs, device="meta").weight.numel()
        assert size <= 10**6, f"keep the convolution small (its weight has {size} elements)"
        conv = nn.Conv2d(**kwargs)
        hw = [d * (k - 1) + 1 + 4 for k, d in zip(conv.kernel_size, conv.dilation, strict=True)]
        x = torch.zeros(1, conv.in_channels, *hw)
        with torch.no_grad():
            output_shape = tuple(conv(x).shape)
    except Exception as error:  # noqa: BLE001 - any failure to build or run it: not a valid conv
        raise AssertionError(
            f"bug_counterexample() {kwargs} is not a valid, small nn.Conv2d: {error}"
        ) from None
    kh, kw = conv.kernel_size
    correct = math.prod(output_shape) * (conv.in_channels // conv.groups) * kh * kw
    oracles_agree(2 * correct == _counted_flops(conv, x), f"FlopCounterMode on {conv}")
    buggy = _flopco_style(conv.in_channels, conv.groups, output_shape, conv.kernel_size)
    assert buggy != correct, (
        f"on nn.Conv2d(**{kwargs}) the FlopCo-style counter gives {buggy} MACs, which is "
        f"correct: choose a conv where it is wrong (1 < groups < in_channels)"
    )


# ------------------------------------------------------------------------------------------
# 6. Latency


@pytest.mark.points(1)
def test_measure_latency_sleep(student, rng):
    """Milliseconds, p10 <= median <= p90; a model that sleeps ms gives a median of about ms."""
    ms = round(rng.uniform(2.0, 4.0), 2)
    got = student.call("measure_latency", probe("Sleep", ms=ms), torch.zeros(3),
                       warmup=rng.randint(1, 3), reps=rng.randint(5, 9))
    assert isinstance(got, dict) and {"median_ms", "p10_ms", "p90_ms"} <= set(got), (
        f"measure_latency should return a dict with median_ms, p10_ms, p90_ms; got {got!r}"
    )
    p10, median, p90 = got["p10_ms"], got["median_ms"], got["p90_ms"]
    assert 0 < p10 <= median <= p90, f"expected 0 < p10_ms <= median_ms <= p90_ms, got {got}"
    assert 0.9 * ms <= p10 and median <= ms + 25, (
        f"a model that sleeps {ms} ms per call should time at about {ms} ms (milliseconds, "
        f"not seconds), got {got}"
    )


@pytest.mark.points(2)
def test_measure_latency_call_count(student, rng):
    """Exactly warmup untimed calls plus reps timed calls."""
    for _ in range(2):
        warmup, reps = rng.randint(1, 9), rng.randint(4, 17)
        _, (after, _) = student.call_inspect("measure_latency", probe("CallCounter"),
                                             torch.zeros(2), warmup=warmup, reps=reps)
        calls = int(after.state_dict["calls"])
        assert calls == warmup + reps, (
            f"measure_latency(..., warmup={warmup}, reps={reps}) should call the model "
            f"{warmup} + {reps} = {warmup + reps} times, it called it {calls} times"
        )


@pytest.mark.points(2)
def test_measure_latency_leaves_model_as_found(student, rng, torch_rng):
    """Timing runs in eval mode under no_grad and restores the training flags."""
    channels, (n, _, h, w) = _draw_cnn(rng)
    state = _random_state(channels, torch_rng)
    model = kit_model("make_cnn", channels=channels, state_dict=state, training=True)
    x = torch.randn(n, 1, h, w, generator=torch_rng)
    _, (after, _) = student.call_inspect("measure_latency", model, x, warmup=1, reps=2)
    in_eval = sorted(name or "<model>" for name, flag in after.training.items() if not flag)
    assert not in_eval, (
        f"the model was in train mode; after measure_latency these modules are in eval mode: "
        f"{in_eval}. Restore every module's training flag."
    )
    changed = sorted(k for k, v in state.items() if not torch.equal(after.state_dict[k], v))
    assert not changed, (
        f"measure_latency changed {changed}: time in eval mode so BatchNorm statistics are "
        f"left untouched"
    )


# ------------------------------------------------------------------------------------------
# 7. Arithmetic intensity and the roofline

A100_PEAK, A100_BANDWIDTH = 312e12, 2.039e12  # fp16 tensor FLOP/s; bytes/s (80 GB)


@pytest.mark.points(2)
def test_arithmetic_intensity_linear(student, rng):
    """2*B*I*O FLOPs / (bytes_per_element * (B*I + I*O + B*O)) bytes."""
    cases = [(512, 4096, 1024, 2), (1, 4096, 1024, 2)]  # the lecture's A100 rows
    cases += [(rng.choice([1, 3, 16, 100, 256, 1000]), rng.randint(8, 5000),
               rng.randint(8, 5000), rng.choice([1, 2, 4])) for _ in range(8)]
    for b, i, o, nbytes in cases:
        expected = 2 * b * i * o / (nbytes * (b * i + i * o + b * o))
        got = student.call("arithmetic_intensity_linear", b, i, o, bytes_per_element=nbytes)
        assert _rel_close(got, expected), (
            f"arithmetic_intensity_linear({b}, {i}, {o}, bytes_per_element={nbytes}) should be "
            f"2*B*I*O / (bytes * (B*I + I*O + B*O)) = {expected:.10g} FLOP/byte, got {got}"
        )


@pytest.mark.points(1)
def test_arithmetic_intensity_elementwise(student, rng):
    """Read one tensor, write one of the same size: flops_per_element / (2 * bytes)."""
    cases = [(1, 2), (9, 2), (8, 2)]  # ReLU, MaxPool 3x3 stride 1, LayerNorm in fp16
    cases += [(rng.choice([1, 2, 3, 5, 8, 9, 25, 0.5]), rng.choice([1, 2, 4, 8]))
              for _ in range(7)]
    for f, nbytes in cases:
        expected = f / (2 * nbytes)
        got = student.call("arithmetic_intensity_elementwise", f, bytes_per_element=nbytes)
        assert _rel_close(got, expected), (
            f"arithmetic_intensity_elementwise({f}, bytes_per_element={nbytes}) should be "
            f"{f} / (2 * {nbytes}) = {expected} FLOP/byte, got {got}"
        )


@pytest.mark.points(2)
def test_roofline_and_bound(student, rng):
    """Attainable = min(peak, ai * bandwidth); "memory" below the ridge peak / bandwidth."""
    cases = []
    for side in ["memory", "compute"] * 5:
        peak, bandwidth = 10 ** rng.uniform(9, 15), 10 ** rng.uniform(9, 13)
        factor = rng.uniform(0.01, 0.9) if side == "memory" else rng.uniform(1.1, 100)
        cases.append((factor * peak / bandwidth, peak, bandwidth, side))
    cases.append((1.0, A100_PEAK, A100_BANDWIDTH, "memory"))
    cases.append((315.0, A100_PEAK, A100_BANDWIDTH, "compute"))
    for ai, peak, bandwidth, side in cases:
        expected = min(peak, ai * bandwidth)
        got = student.call("roofline", ai, peak, bandwidth)
        assert _rel_close(got, expected), (
            f"roofline({ai:.6g}, {peak:.6g}, {bandwidth:.6g}) should be "
            f"min(peak, ai * bandwidth) = {expected:.6g} FLOP/s, got {got}"
        )
        got = student.call("bound", ai, peak, bandwidth)
        assert got == side, (
            f"bound({ai:.6g}, {peak:.6g}, {bandwidth:.6g}): the ridge point is "
            f"{peak / bandwidth:.6g} FLOP/byte, so it should be {side!r}, got {got!r}"
        )


# ------------------------------------------------------------------------------------------
# 8. Activations, normalization and residual additions: FLOPs per element
#
# The notebook's table: one FLOP per scalar operation of the layer's formula, per-row and
# per-channel terms dropped. ReLU 1; GELU 5 (exact, erf) or 9 (tanh form); LayerNorm 7, or 5
# without elementwise affine; BatchNorm with batch statistics (training) 7, or 5 without affine;
# BatchNorm in inference 2; BatchNorm folded into the conv before it 0; residual addition 1.

_GELU_FLOPS = {"none": 5, "tanh": 9}
_NORM_FLOPS = {True: 7, False: 5}  # keyed by affine
_BN_INFERENCE_FLOPS = 2


def _check_elementwise(student, name: str, args: tuple, kwargs: dict, training: bool,
                       shape: tuple[int, ...], per_element: int, rule: str) -> None:
    local = getattr(nn, name)(*args, **kwargs).train(training)
    with torch.no_grad():
        out = local(torch.zeros(shape))
    oracles_agree(tuple(out.shape) == shape, f"nn.{name}{args} on an input of shape {shape}")
    expected = per_element * math.prod(shape)
    got = student.call("elementwise_flops", layer(name, *args, training=training, **kwargs),
                       shape)
    mode = "training" if training else "eval"
    assert got == expected, (
        f"elementwise_flops(nn.{name}(*{args}, **{kwargs}) in {mode} mode, {shape}) should be "
        f"{per_element} FLOPs per element ({rule}) x {math.prod(shape)} elements = {expected}, "
        f"got {got}"
    )


def _draw_shape(rng: random.Random, dims: int) -> tuple[int, ...]:
    return tuple(rng.randint(2, 9) for _ in range(dims))


@pytest.mark.points(1)
def test_elementwise_flops_activations(student, rng):
    """FLOPs per element: ReLU 1, GELU 5 (exact: erf form), GELU 9 (approximate="tanh")."""
    for kind in ["ReLU", "ReLU", "none", "none", "tanh", "tanh"]:
        shape = _draw_shape(rng, rng.randint(1, 4))
        training = rng.random() < 0.5
        if kind == "ReLU":
            _check_elementwise(student, "ReLU", (), {}, training, shape, 1, "one comparison")
        else:
            _check_elementwise(student, "GELU", (), {"approximate": kind}, training, shape,
                               _GELU_FLOPS[kind], f"GELU, approximate={kind!r}")


@pytest.mark.points(2)
def test_elementwise_flops_normalization(student, rng):
    """LayerNorm 7 per element (5 without affine); BatchNorm 7 (5 without affine) in training
    mode, where it computes the batch's statistics, and 2 in eval mode (a_c x + b_c)."""
    cases = [("LayerNorm", True, None), ("LayerNorm", False, None),
             ("BatchNorm2d", True, True), ("BatchNorm2d", False, True),
             ("BatchNorm2d", True, False), ("BatchNorm2d", False, False),
             ("BatchNorm1d", rng.random() < 0.5, True), ("BatchNorm1d", rng.random() < 0.5, False)]
    for name, affine, training in cases:
        if name == "LayerNorm":
            shape = _draw_shape(rng, rng.randint(2, 3))
            normalized = list(shape[-rng.randint(1, len(shape) - 1):])
            _check_elementwise(student, name, (normalized,), {"elementwise_affine": affine},
                               rng.random() < 0.5, shape, _NORM_FLOPS[affine],
                               f"LayerNorm, elementwise_affine={affine}")
            continue
        shape = _draw_shape(rng, 4 if name == "BatchNorm2d" else rng.randint(2, 3))
        per_element = _NORM_FLOPS[affine] if training else _BN_INFERENCE_FLOPS
        rule = (f"batch statistics, affine={affine}" if training
                else "inference: one multiplication and one addition")
        _check_elementwise(student, name, (shape[1],), {"affine": affine}, training, shape,
                           per_element, rule)


def _elementwise_by_hooks(model: nn.Module, shape: tuple[int, ...], fold_bn: bool) -> int:
    """The table applied with forward hooks in the grader's process: a second oracle for the
    closed forms below (the model runs in eval mode, so BatchNorm is in inference)."""
    costs = {nn.ReLU: lambda m: 1, nn.GELU: lambda m: _GELU_FLOPS[m.approximate],
             nn.LayerNorm: lambda m: _NORM_FLOPS[m.elementwise_affine],
             nn.BatchNorm1d: lambda m: 0 if fold_bn else _BN_INFERENCE_FLOPS,
             nn.BatchNorm2d: lambda m: 0 if fold_bn else _BN_INFERENCE_FLOPS,
             nncourse.Residual: lambda m: 1}
    total = []
    handles = [m.register_forward_hook(
        lambda mod, inputs, output: total.append(costs[type(mod)](mod) * output.numel()))
        for m in model.modules() if type(m) in costs]
    try:
        _counted_flops(model.eval(), torch.zeros(shape))
    finally:
        for handle in handles:
            handle.remove()
    return sum(total)


def _cnn_flops(channels, shape, fold_bn: bool) -> int:
    """make_cnn: 2 x MACs + (2 per BatchNorm element, 0 folded) + 1 per ReLU element."""
    (c1, c2, c3), (n, _, h, w) = channels, shape
    maps = n * (c1 * h * w + c2 * h * w + c3 * (h // 2) * (w // 2))  # each has a BN and a ReLU
    return 2 * sum(_cnn_macs(channels, shape).values()) + maps * (0 if fold_bn else 2) + maps


def _resnet_flops(channels: int, blocks: int, shape, fold_bn: bool) -> int:
    """make_resnet: stem conv 1 -> c, 2 convs c -> c per block, fc c -> 10 (all maps n*c*h*w);
    1 + 2 * blocks BatchNorms and ReLUs; one residual addition per block."""
    n, _, h, w = shape
    fmap = n * channels * h * w
    macs = fmap * 9 + blocks * 2 * fmap * channels * 9 + n * channels * 10
    layers = 1 + 2 * blocks
    return 2 * macs + layers * fmap * (0 if fold_bn else 2) + layers * fmap + blocks * fmap


def _check_model_flops(student, spec, local: nn.Module, shape, fold_bn: bool, expected: int,
                       described: str) -> None:
    oracle = _counted_flops(local.eval(), torch.zeros(shape))
    oracle += _elementwise_by_hooks(local, shape, fold_bn)
    oracles_agree(oracle == expected, f"model_flops closed form for {described}")
    got = student.call("model_flops", spec, shape, fold_bn=fold_bn)
    assert got == expected, (
        f"model_flops({described}, {shape}, fold_bn={fold_bn}) should be {expected} FLOPs "
        f"(2 x conv and Linear MACs, plus per element: BatchNorm {0 if fold_bn else 2}, ReLU 1, "
        f"GELU 5 or 9, LayerNorm 7 or 5, residual addition 1), got {got}"
    )


@pytest.mark.points(2)
def test_model_flops_feed_forward(student, rng):
    """Feed-forward networks in inference: the CNN (BatchNorm 2 and ReLU 1 per element), the
    MLP, and Linear-LayerNorm-GELU-Linear on a (batch, seq, features) input."""
    channels, shape = _draw_cnn(rng)
    _check_model_flops(student, kit_model("make_cnn", channels=channels, training=True),
                       nncourse.make_cnn(channels), shape, False,
                       _cnn_flops(channels, shape, False), f"make_cnn({channels})")
    hidden, batch = tuple(rng.randint(3, 40) for _ in range(rng.randint(1, 3))), rng.randint(2, 6)
    widths = [64, *hidden, 10]
    expected = 2 * batch * sum(a * b for a, b in pairwise(widths)) + batch * sum(hidden)
    _check_model_flops(student, kit_model("make_mlp", hidden=hidden), nncourse.make_mlp(hidden),
                       (batch, 1, 8, 8), False, expected, f"make_mlp({hidden})")
    b, t, f, h, o = (rng.randint(2, 6), rng.randint(2, 9), rng.randint(3, 20),
                     rng.randint(3, 30), rng.randint(2, 12))
    affine, approximate = rng.random() < 0.5, rng.choice(["none", "tanh"])
    specs = [("Linear", (f, h), {}), ("LayerNorm", (h,), {"elementwise_affine": affine}),
             ("GELU", (), {"approximate": approximate}), ("Linear", (h, o), {})]
    local = nn.Sequential(*[getattr(nn, n)(*a, **k) for n, a, k in specs])
    expected = (2 * b * t * (f * h + h * o)
                + (_NORM_FLOPS[affine] + _GELU_FLOPS[approximate]) * b * t * h)
    _check_model_flops(student, seq(*[layer(n, *a, **k) for n, a, k in specs]), local,
                       (b, t, f), False, expected,
                       f"Sequential(Linear({f}, {h}), LayerNorm({h}, elementwise_affine={affine}),"
                       f" GELU(approximate={approximate!r}), Linear({h}, {o}))")


@pytest.mark.points(2)
def test_model_flops_residual_and_folded_bn(student, rng):
    """A residual network (one addition per output element of each nncourse.Residual), with
    BatchNorm in inference (2 per element) or folded into the conv before it (0)."""
    for fold_bn in [False, True]:
        channels, blocks = rng.choice([3, 4, 6, 8]), rng.randint(1, 3)
        shape = (rng.randint(2, 4), 1, rng.randint(3, 9), rng.randint(3, 9))
        spec = kit_model("make_resnet", channels=channels, blocks=blocks,
                         training=rng.random() < 0.5)
        _check_model_flops(student, spec, nncourse.make_resnet(channels, blocks), shape, fold_bn,
                           _resnet_flops(channels, blocks, shape, fold_bn),
                           f"make_resnet(channels={channels}, blocks={blocks})")
    channels, shape = _draw_cnn(rng)
    _check_model_flops(student, kit_model("make_cnn", channels=channels),
                       nncourse.make_cnn(channels), shape, True,
                       _cnn_flops(channels, shape, True), f"make_cnn({channels})")


# ------------------------------------------------------------------------------------------
# 9. Attention: nn.TransformerEncoderLayer
#
# Course convention: the MACs are those of the weight matmuls, in_proj (d -> 3d), out_proj
# (d -> d), linear1 (d -> f) and linear2 (f -> d), each on batch * seq tokens; bias excluded.
# The attention products Q K^T and A V are reported apart: batch * heads * seq^2 * (d / heads)
# MACs each. The input is (batch, seq, d) with batch_first, else (seq, batch, d).


def _encoder_macs(d: int, heads: int, ff: int, batch: int, seq_len: int) -> dict[str, int]:
    tokens, product = batch * seq_len, batch * heads * seq_len * seq_len * (d // heads)
    return {"in_proj": tokens * d * 3 * d, "out_proj": tokens * d * d, "linear1": tokens * d * ff,
            "linear2": tokens * ff * d, "qk": product, "av": product}


_WEIGHTS = ("in_proj", "out_proj", "linear1", "linear2")


def _flops_by_operator(module: nn.Module, x: torch.Tensor, fast_path: bool) -> dict[str, int]:
    """FlopCounterMode's FLOPs per operator, the fast path on or off, attention in the "math"
    kernel (the CPU's fused attention kernel has no FLOP formula)."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(fast_path)
    try:
        with (torch.no_grad(), sdpa_kernel(SDPBackend.MATH),
              FlopCounterMode(display=False) as counter):
            module(x)
    finally:
        torch.backends.mha.set_fastpath_enabled(before)
    return {str(op): n for op, n in counter.get_flop_counts().get("Global", {}).items()}


def _draw_encoder(rng: random.Random, even_heads: bool) -> dict:
    """d_model, nhead, dim_feedforward, and batch != seq (so that the two layouts differ)."""
    heads = rng.choice([2, 4, 6, 8] if even_heads else [1, 2, 3, 4, 5, 6])
    seq_len = rng.randint(2, 12)
    batch = rng.choice([b for b in range(1, 7) if b != seq_len])
    return dict(d=heads * rng.choice([2, 3, 4, 6, 8]), heads=heads, ff=rng.randint(4, 96),
                batch=batch, seq=seq_len)


# (batch_first, sent in training mode, described): eval with batch_first and an even number of
# heads is PyTorch's fast path (one fused kernel, no submodule runs) for a forward under no_grad
_ENCODER_CASES = [(True, False, "fast path"), (True, True, "training mode"),
                  (False, False, "sequence first"), (False, True, "sequence first, training")]


def _encoder_case(rng: random.Random, batch_first: bool, training: bool):
    """One drawn encoder layer: (spec, its grader-side twin, input shape, expected MACs)."""
    cfg = _draw_encoder(rng, even_heads=batch_first and not training)
    d, heads, ff, batch, seq_len = cfg["d"], cfg["heads"], cfg["ff"], cfg["batch"], cfg["seq"]
    shape = (batch, seq_len, d) if batch_first else (seq_len, batch, d)
    kwargs = dict(dim_feedforward=ff, dropout=0.0, batch_first=batch_first)
    local = nn.TransformerEncoderLayer(d, heads, **kwargs).eval()
    expected = _encoder_macs(d, heads, ff, batch, seq_len)
    x = torch.zeros(shape)
    counted = _flops_by_operator(local, x, fast_path=False)
    oracles_agree(counted.get("aten.mm", 0) + counted.get("aten.addmm", 0)
                   == 2 * sum(expected[k] for k in _WEIGHTS)
                   and counted.get("aten.bmm", 0) == 2 * (expected["qk"] + expected["av"]),
                   f"FlopCounterMode on an encoder layer {cfg}, batch_first={batch_first}")
    if batch_first and not training:  # the draw promises the fast path: it counts nothing
        oracles_agree(not _flops_by_operator(local, x, fast_path=True),
                       f"the fast path of an encoder layer {cfg}")
    spec = layer("TransformerEncoderLayer", d, heads, training=training, **kwargs)
    described = (f"nn.TransformerEncoderLayer({d}, {heads}, dim_feedforward={ff}, "
                 f"batch_first={batch_first}) in {'training' if training else 'eval'} mode on "
                 f"{shape} ({'batch, seq' if batch_first else 'seq, batch'}, d_model)")
    return spec, shape, expected, described


def _macs_dict(got, what: str) -> dict:
    assert isinstance(got, dict), f"{what} should return a dict, got {got!r}"
    return got


@pytest.mark.points(2)
def test_encoder_layer_macs_weights(student, rng):
    """in_proj (3 d^2), out_proj (d^2), linear1 and linear2 (d * f each) MACs per token, times
    batch * seq tokens; batch_first or not, training or eval (where PyTorch's fast path runs)."""
    for batch_first, training, _ in _ENCODER_CASES:
        spec, shape, expected, described = _encoder_case(rng, batch_first, training)
        got = _macs_dict(student.call("encoder_layer_macs", spec, shape), "encoder_layer_macs")
        wrong = {k: got.get(k) for k in _WEIGHTS if got.get(k) != expected[k]}
        assert not wrong, (
            f"encoder_layer_macs({described}): the weight matmuls should be "
            f"{ {k: expected[k] for k in _WEIGHTS} } MACs (in_proj d -> 3d, out_proj d -> d, "
            f"linear1 d -> f, linear2 f -> d, on every token); these differ: {wrong}"
        )


@pytest.mark.points(2)
def test_encoder_layer_macs_attention_products(student, rng):
    """QK^T and AV: batch * heads * seq^2 * (d / heads) MACs each; the layout (batch_first or
    not) decides which dimension is the sequence."""
    for batch_first, training, _ in _ENCODER_CASES:
        spec, shape, expected, described = _encoder_case(rng, batch_first, training)
        got = _macs_dict(student.call("encoder_layer_macs", spec, shape), "encoder_layer_macs")
        wrong = {k: got.get(k) for k in ("qk", "av") if got.get(k) != expected[k]}
        assert not wrong, (
            f"encoder_layer_macs({described}): qk and av should each be batch * heads * seq^2 "
            f"* (d_model / heads) = {expected['qk']} MACs; these differ: {wrong}"
        )


def _attention_macs_with_fast_path(model, input_shape, fast_path):
    """Run in the kernel: the student's attention_model_macs with PyTorch's attention fast
    path switched as asked, and switched back (every check shares the kernel)."""
    import torch

    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(fast_path)
    try:
        return attention_model_macs(model, input_shape)  # noqa: F821 - the notebook's function
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


@pytest.mark.points(2)
def test_attention_model_macs(student, rng):
    """Linear -> encoder layers -> Linear: every Linear by name, and per encoder layer P the
    entries P.self_attn.in_proj, P.self_attn.out_proj, P.linear1, P.linear2 (QK^T and AV not
    included); with PyTorch's fast path enabled or not, batch_first or not."""
    for batch_first, fast_path in [(True, True), (True, False), (False, True)]:
        cfg = _draw_encoder(rng, even_heads=batch_first and fast_path)
        d, heads, ff, batch, seq_len = cfg["d"], cfg["heads"], cfg["ff"], cfg["batch"], cfg["seq"]
        f_in, f_out, n_layers = rng.randint(2, 12), rng.randint(2, 12), rng.randint(1, 2)
        shape = (batch, seq_len, f_in) if batch_first else (seq_len, batch, f_in)
        kwargs = dict(dim_feedforward=ff, dropout=0.0, batch_first=batch_first)
        specs = [("Linear", (f_in, d), {})]
        specs += [("TransformerEncoderLayer", (d, heads), kwargs)] * n_layers
        specs += [("Linear", (d, f_out), {})]
        tokens, per_layer = batch * seq_len, _encoder_macs(d, heads, ff, batch, seq_len)
        expected = {"0": tokens * f_in * d, str(n_layers + 1): tokens * d * f_out}
        for i in range(1, n_layers + 1):
            expected |= {f"{i}.self_attn.in_proj": per_layer["in_proj"],
                         f"{i}.self_attn.out_proj": per_layer["out_proj"],
                         f"{i}.linear1": per_layer["linear1"], f"{i}.linear2": per_layer["linear2"]}
        local = nn.Sequential(*[getattr(nn, n)(*a, **k) for n, a, k in specs]).eval()
        counted = sum(_flops_by_operator(local, torch.zeros(shape), fast_path=False).values())
        products = n_layers * (per_layer["qk"] + per_layer["av"])
        oracles_agree(counted == 2 * (sum(expected.values()) + products),
                       f"FlopCounterMode on an attention model {cfg}")
        model = seq(*[layer(n, *a, **k) for n, a, k in specs], training=rng.random() < 0.5)
        got = student.drive(_attention_macs_with_fast_path, model, shape, fast_path)
        described = (f"Sequential(Linear({f_in}, {d}), {n_layers} x TransformerEncoderLayer({d}, "
                     f"{heads}, dim_feedforward={ff}, batch_first={batch_first}), Linear({d}, "
                     f"{f_out})) on {shape}, fast path {'enabled' if fast_path else 'disabled'}")
        assert got == expected, (
            f"attention_model_macs({described}) should be {expected} (the Linear layers by name, "
            f"each encoder layer's four weight matmuls on all {tokens} tokens), got {got}"
        )


@pytest.mark.points(1)
def test_model_macs_refuses_attention(student, rng):
    """model_macs must not report attention's projections as 0: it raises a ValueError that
    names nn.MultiheadAttention."""
    cfg = _draw_encoder(rng, even_heads=True)
    shape = (cfg["batch"], cfg["seq"], cfg["d"])
    model = seq(layer("Linear", cfg["d"], cfg["d"]),
                layer("TransformerEncoderLayer", cfg["d"], cfg["heads"],
                      dim_feedforward=cfg["ff"], batch_first=True))
    try:
        got = student.call("model_macs", model, shape)
    except StudentError as error:
        message = str(error)
        assert "ValueError" in message and "attention" in message.lower(), (
            f"model_macs on a model with a TransformerEncoderLayer should raise a ValueError "
            f"that names nn.MultiheadAttention; it raised {message}"
        )
        return
    raise AssertionError(
        f"model_macs on a model with a TransformerEncoderLayer returned {got}: its hooks cannot "
        f"see the attention projections, so it should raise a ValueError naming "
        f"nn.MultiheadAttention"
    )


# ------------------------------------------------------------------------------------------
# 10. FlopCo (flopco-pytorch 0.1.4), run for real in the grader's process
#
# What it reports per Conv2d / Linear: 2 x the MACs of one sample (conv: H_out W_out C_out
# C_in k_h k_w, with C_in read as 1 whenever groups != 1) or of one row (Linear: in * out),
# plus, with a bias, C_out H_out W_out (conv) or in_features (Linear: it unpacks the weight's
# (out, in) shape as (in, out)).


def _flopco_conv(c_in, c_out, kernel, groups, out_hw, bias) -> int:
    (kh, kw), (h, w) = _pair(kernel), out_hw
    return 2 * h * w * c_out * (1 if groups != 1 else c_in) * kh * kw + bias * c_out * h * w


def _flopco_linear(in_features, out_features, bias) -> int:
    return 2 * in_features * out_features + bias * in_features


def _flopco_report(model: nn.Module, shape: tuple[int, ...]) -> dict[str, int]:
    """The real FlopCo on a copy in eval mode (it neither switches to eval nor keeps hooks)."""
    from flopco import FlopCo

    stats = FlopCo(copy.deepcopy(model).eval(), img_size=shape)
    return {name: sum(values) for name, values in stats.flops.items()}


def _check_flopco(student, spec, local: nn.Module, shape, expected: dict[str, int],
                  described: str) -> None:
    oracles_agree(_flopco_report(local, shape) == expected, f"FlopCo on {described}")
    got = student.call("flopco_prediction", spec, shape)
    assert got == expected, (
        f"flopco_prediction({described}, {shape}) should be {expected}: what FlopCo reports "
        f"(one sample or one row, groups != 1 read as one input channel, bias as C_out*H_out*"
        f"W_out for a conv and in_features for a Linear), got {got}"
    )


@pytest.mark.points(2)
def test_flopco_prediction_course_models(student, rng):
    """FlopCo on the course CNN and MLP at batch > 1: one sample, plus in_features per Linear
    bias (the convolutions have none)."""
    channels, (n, _, h, w) = _draw_cnn(rng)
    (c1, c2, c3), shape = channels, (n, 1, h, w)
    expected = {"conv1": _flopco_conv(1, c1, 3, 1, (h, w), False),
                "conv2": _flopco_conv(c1, c2, 3, 1, (h, w), False),
                "conv3": _flopco_conv(c2, c3, 3, 1, (h // 2, w // 2), False),
                "fc": _flopco_linear(c3, 10, True)}
    _check_flopco(student, kit_model("make_cnn", channels=channels), nncourse.make_cnn(channels),
                  shape, expected, f"make_cnn({channels})")
    hidden = tuple(rng.randint(3, 40) for _ in range(rng.randint(1, 3)))
    widths = [64, *hidden, 10]
    expected = {f"fc{i}": _flopco_linear(a, b, True)
                for i, (a, b) in enumerate(pairwise(widths), start=1)}
    _check_flopco(student, kit_model("make_mlp", hidden=hidden, training=True),
                  nncourse.make_mlp(hidden), (rng.randint(2, 9), 1, 8, 8), expected,
                  f"make_mlp({hidden})")


@pytest.mark.points(2)
def test_flopco_prediction_grouped_and_sequences(student, rng):
    """FlopCo on a group conv (1 < groups < C_in: one input channel counted) and a depth-wise
    conv, with or without bias; and on Linear layers over a (batch, seq, features) input (one
    row)."""
    groups = rng.choice([2, 4])
    c_in, c_mid = groups * rng.randint(2, 4), groups * rng.randint(1, 4)
    k, bias1, bias2 = rng.choice([1, 3, (3, 1)]), rng.random() < 0.5, rng.random() < 0.5
    n, h, w = rng.randint(2, 4), rng.randint(4, 9), rng.randint(4, 9)
    specs = [("Conv2d", (c_in, c_mid, k), {"groups": groups, "bias": bias1}), ("ReLU", (), {}),
             ("Conv2d", (c_mid, c_mid, 3), {"groups": c_mid, "padding": 1, "bias": bias2})]
    out_hw = _out_hw(h, w, k)
    expected = {"0": _flopco_conv(c_in, c_mid, k, groups, out_hw, bias1),
                "2": _flopco_conv(c_mid, c_mid, 3, c_mid, out_hw, bias2)}
    local = nn.Sequential(*[getattr(nn, name)(*a, **kw) for name, a, kw in specs])
    _check_flopco(student, seq(*[layer(name, *a, **kw) for name, a, kw in specs]), local,
                  (n, c_in, h, w), expected,
                  f"Sequential(Conv2d({c_in}, {c_mid}, {k}, groups={groups}, bias={bias1}), ReLU, "
                  f"Conv2d({c_mid}, {c_mid}, 3, groups={c_mid}, padding=1, bias={bias2}))")
    f_in, hidden, f_out = rng.randint(3, 24), rng.randint(3, 24), rng.randint(2, 12)
    bias1, bias2 = rng.random() < 0.5, rng.random() < 0.5
    specs = [("Linear", (f_in, hidden), {"bias": bias1}), ("GELU", (), {}),
             ("Linear", (hidden, f_out), {"bias": bias2})]
    expected = {"0": _flopco_linear(f_in, hidden, bias1), "2": _flopco_linear(hidden, f_out, bias2)}
    local = nn.Sequential(*[getattr(nn, name)(*a, **kw) for name, a, kw in specs])
    _check_flopco(student, seq(*[layer(name, *a, **kw) for name, a, kw in specs]), local,
                  (rng.randint(2, 5), rng.randint(2, 9), f_in), expected,
                  f"Sequential(Linear({f_in}, {hidden}, bias={bias1}), GELU, Linear({hidden}, "
                  f"{f_out}, bias={bias2}))")
