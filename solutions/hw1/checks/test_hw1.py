"""Hidden checks for homework 1: measures of effectiveness.

Convention (stated once in the notebook and used by every check): MAC = multiply-accumulates of
Conv2d and Linear layers only, FLOP = 2 x MAC, bias excluded, one forward of the whole input
(batch included). It is the convention of torch.utils.flop_counter.FlopCounterMode, which every
MAC check below uses as a second oracle on a real layer built in the grader's process.

Sections 8-10 add, each stated again above its checks: FLOPs per element of activations,
normalization layers and residual additions (the notebook's table); a transformer encoder
layer's weight matmuls (in_proj, out_proj, linear1, linear2) as its MACs, with the attention
products QK^T and AV reported apart; and what the real FlopCo package (flopco-pytorch 0.1.4)
reports, run in the grader's process as the second oracle. Sections 11-12 add bytes (bits / 8 of
each dtype, a model's size, the activations a forward holds by a stated rule, and the peak the
profiler measures, compared with the grader's own profiler on the same draw) and throughput
(samples per second, measured on the grader's clock, and the roofline's).

Every input is drawn per run from the `rng` / `torch_rng` fixtures, so that answers differ from
the notebook's and the public checks' fixed cases. Counts (parameters, MACs, FLOPs, sizes) are
exact integers: a float, even a whole one, is not a count. Latency percentiles are checked on a
clock the grader controls (each forward of the timed model takes a drawn number of
milliseconds on it), against every standard definition of a percentile.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import random
from itertools import pairwise
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import nncourse
from grader.checks import (
    ModuleSpec,
    StudentRaised,
    changed_modes,
    kit_model,
    layer,
    one_thread,
    oracles_agree,
    pair,
    probe,
    refuses,
    seq,
)

# ------------------------------------------------------------------------------------------
# Oracles: the formulas, written independently of the reference notebook.


def _out_hw(h, w, kernel_size, stride=1, padding=0, dilation=1) -> tuple[int, int]:
    """PyTorch's Conv2d output size: floor((H + 2p - d(k-1) - 1) / s) + 1 per dimension."""
    sizes = zip((h, w), *map(pair, (kernel_size, stride, padding, dilation)), strict=True)
    return tuple((x + 2 * p - d * (k - 1) - 1) // s + 1 for x, k, s, p, d in sizes)


def _conv_macs(c_in, c_out, kernel_size, input_hw, stride=1, padding=0, dilation=1, groups=1,
               batch=1) -> int:
    """batch * C_out * H_out * W_out * (C_in / groups) * k_h * k_w."""
    h_out, w_out = _out_hw(*input_hw, kernel_size, stride, padding, dilation)
    kh, kw = pair(kernel_size)
    return batch * c_out * h_out * w_out * (c_in // groups) * kh * kw


def _counted_flops(module: nn.Module, x: torch.Tensor) -> int:
    """FLOPs FlopCounterMode counts for one forward (2 x MAC, bias and BatchNorm excluded)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops()


def _rel_close(got, expected: float, rel: float = 1e-9) -> bool:
    return isinstance(got, (int, float)) and math.isclose(got, expected, rel_tol=rel)


@dataclasses.dataclass(frozen=True)
class _NotACount:
    """A returned value that is not an integer count: it equals no count, and says why."""

    value: Any

    def __repr__(self) -> str:
        return f"{self.value!r} (a {type(self.value).__name__}, not an int)"


def _count(value: Any) -> int | _NotACount:
    """Counts (parameters, MACs, FLOPs, sizes) are exact integers: an int (a one-element integer
    tensor is read as its int); a float, even a whole one, is not a count (a `/` where `//` was
    meant gives one)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if (isinstance(value, torch.Tensor) and value.numel() == 1 and value.dtype != torch.bool
            and not value.dtype.is_floating_point and not value.dtype.is_complex):
        return int(value.item())
    return _NotACount(value)


def _counts(value: Any) -> Any:
    """A dict of counts with each value read by `_count` (anything else as it is)."""
    return {k: _count(v) for k, v in value.items()} if isinstance(value, dict) else value


Spec = tuple[str, tuple, dict]  # a torch.nn layer: (class name, args, kwargs)


def _built(spec: Spec) -> nn.Module:
    """The layer, built in the grader's process (the oracles' twin of what is sent)."""
    name, args, kwargs = spec
    return getattr(nn, name)(*args, **kwargs)


def _sent(spec: Spec) -> ModuleSpec:
    """The layer as a spec the student's kernel builds."""
    name, args, kwargs = spec
    return layer(name, *args, **kwargs)


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
    padding = rng.randint(0, max(pair(kernel)) // 2 + 1)
    reach = [d * (k - 1) + 1 for k, d in zip(pair(kernel), pair(dilation), strict=True)]
    input_hw = tuple(r + rng.randint(2, 14) for r in reach)
    return dict(c_in=c_in, c_out=c_out, kernel_size=kernel, input_hw=input_hw, stride=stride,
                padding=padding, dilation=dilation, groups=groups, batch=batch)


def _check_conv_macs(student, cfg: dict) -> None:
    expected = _conv_macs(**cfg)
    conv = nn.Conv2d(cfg["c_in"], cfg["c_out"], cfg["kernel_size"], stride=cfg["stride"],
                     padding=cfg["padding"], dilation=cfg["dilation"], groups=cfg["groups"])
    x = torch.zeros(cfg["batch"], cfg["c_in"], *cfg["input_hw"])
    oracles_agree(2 * expected == _counted_flops(conv, x), f"FlopCounterMode on {cfg}")
    got = _count(student.call("conv2d_macs", **cfg))
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
        kh, kw = pair(k)
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
        got = _count(student.call("count_params", layer(name, *args, **kwargs)))
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
        local = nn.Sequential(*map(_built, specs))
        expected = sum(p.numel() for p in local.parameters())
        got = _count(student.call("count_params", seq(*map(_sent, specs))))
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
        got = _count(student.call("linear_macs", i, o, shape))
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
        reach = [dd * (kk - 1) + 1 for kk, dd in zip(pair(k), pair(d), strict=True)]
        h, w = (r + rng.randint(0, 15) for r in reach)
        expected = _out_hw(h, w, k, s, p, d)
        real = nn.Conv2d(1, 1, k, stride=s, padding=p, dilation=d)(torch.zeros(1, 1, h, w))
        oracles_agree(tuple(real.shape[-2:]) == expected, f"nn.Conv2d output on {h}x{w}")
        got = student.call("conv2d_output_hw", h, w, k, stride=s, padding=p, dilation=d)
        got = tuple(map(_count, got)) if isinstance(got, (list, tuple)) else got
        assert got == expected, (
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
        got = _count(student.call("flops", macs))
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
        got = _counts(student.call("model_macs", model, shape))
        assert got == expected, (
            f"model_macs(make_cnn({channels}), {shape}) should be {expected} "
            f"(one entry per Conv2d and Linear, batch included), got {got}"
        )


def _conv_block(rng: random.Random) -> tuple[list[Spec], tuple[int, ...], dict[str, int]]:
    """(layer specs, input shape, expected MACs by name) of a drawn Sequential: a group conv
    (1 < groups < C_in, a square or rectangular kernel, stride, padding), a ReLU, a depth-wise
    conv, a point-wise conv, pooling, Flatten and a Linear."""
    groups = rng.choice([2, 3, 4])
    c_in, c_mid, c_out = groups * rng.randint(2, 4), groups * rng.randint(1, 4), rng.randint(2, 9)
    kernel, stride = rng.choice([(3, 1), (1, 3), (3, 5), (2, 3), 3]), rng.choice([1, 2, (2, 1)])
    padding, dw_stride = rng.randint(0, 1), rng.choice([1, 2])
    shape = (rng.randint(1, 4), c_in, rng.randint(6, 12), rng.randint(6, 12))
    n, hw = shape[0], shape[2:]
    first = dict(stride=stride, padding=padding, groups=groups)
    hw1 = _out_hw(*hw, kernel, stride, padding)
    hw2 = _out_hw(*hw1, 3, dw_stride, 1)
    n_out = rng.randint(2, 12)
    specs = [("Conv2d", (c_in, c_mid, kernel), first), ("ReLU", (), {}),
             ("Conv2d", (c_mid, c_mid, 3), {"stride": dw_stride, "padding": 1, "groups": c_mid}),
             ("Conv2d", (c_mid, c_out, 1), {"bias": False}), ("AdaptiveAvgPool2d", (1,), {}),
             ("Flatten", (), {}), ("Linear", (c_out, n_out), {})]
    expected = {"0": _conv_macs(c_in, c_mid, kernel, hw, batch=n, **first),
                "2": _conv_macs(c_mid, c_mid, 3, hw1, dw_stride, 1, groups=c_mid, batch=n),
                "3": _conv_macs(c_mid, c_out, 1, hw2, batch=n), "6": n * c_out * n_out}
    return specs, shape, expected


@pytest.mark.points(2)
def test_model_macs_grouped_strided_and_sequences(student, rng):
    """Beyond the course CNN: group, depth-wise and point-wise convs with strides and
    rectangular kernels (C_in / groups channels per output element), and Linear layers on a
    (batch, seq, features) input (every row counts); integer MACs by qualified name."""
    b, t, f, h, o = (rng.randint(2, 5), rng.randint(2, 9), rng.randint(3, 24),
                     rng.randint(3, 24), rng.randint(2, 12))
    sequence = [("Linear", (f, h), {}), ("GELU", (), {}), ("Linear", (h, o), {"bias": False})]
    cases = [_conv_block(rng), (sequence, (b, t, f), {"0": b * t * f * h, "2": b * t * h * o})]
    for specs, shape, expected in cases:
        local = nn.Sequential(*map(_built, specs)).eval()
        oracles_agree(2 * sum(expected.values()) == _counted_flops(local, torch.zeros(shape)),
                      f"FlopCounterMode on {local}")
        model = seq(*map(_sent, specs), training=rng.random() < 0.5)
        got = _counts(student.call("model_macs", model, shape))
        described = ", ".join(f"{n}{a}{k or ''}" for n, a, k in specs)
        assert got == expected, (
            f"model_macs(Sequential({described}), {shape}) should be {expected} (C_in / groups "
            f"input channels per output element, every row of a Linear's input, batch "
            f"included, integer counts), got {got}"
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
        in_eval = changed_modes(after, training=True)
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
        kh, kw = pair(k)
        expected = math.prod(output_shape) * (c_in // groups) * kh * kw
        oracles_agree(2 * expected == _counted_flops(conv, x), f"FlopCounterMode on {conv}")
        got = _count(student.call("fixed_conv_macs", layer("Conv2d", c_in, c_out, k, **kwargs),
                                  output_shape))
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
    """Exactly warmup untimed calls plus reps timed calls (10 and 50 by default)."""
    for warmup, reps in [(rng.randint(1, 9), rng.randint(4, 17)) for _ in range(2)] + [(None,) * 2]:
        given = {} if warmup is None else {"warmup": warmup, "reps": reps}
        _, (after, _) = student.call_inspect("measure_latency", probe("CallCounter"),
                                             torch.zeros(2), **given)
        calls, warmup, reps = int(after.state_dict["calls"]), warmup or 10, reps or 50
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
    in_eval = changed_modes(after, training=True)
    assert not in_eval, (
        f"the model was in train mode; after measure_latency these modules are in eval mode: "
        f"{in_eval}. Restore every module's training flag."
    )
    changed = sorted(k for k, v in state.items() if not torch.equal(after.state_dict[k], v))
    assert not changed, (
        f"measure_latency changed {changed}: time in eval mode so BatchNorm statistics are "
        f"left untouched"
    )


def _timed_on_the_graders_clock(function: str, schedule: dict[str, list[int]], args: list,
                                kwargs: dict):
    """Run in the kernel: the notebook's ``function`` (measure_latency or throughput) on a model
    whose k-th forward on a batch of B rows takes ``schedule[str(B)][k]`` milliseconds (the
    last entry for any later call) on a clock the grader controls. Every clock of the time
    module (and timeit.default_timer, and the notebook's own names for them) reads that clock
    in this thread while the call runs; other threads read the real ones.

    measure_latency gets (model, torch.zeros(*args), **kwargs); throughput gets (model, *args,
    **kwargs). Returns what the function returned, the type names of its keys if it is a dict
    (they cross as text), one [input shape, grad enabled, training flag] per forward, and the
    model's training flag afterwards (it is sent in training mode)."""
    import threading
    import time
    import timeit

    import torch

    owner = threading.get_ident()
    state = {"ns": 10**12}  # the grader's clock, in integer nanoseconds
    calls: list[list] = []
    clocks = ("perf_counter", "perf_counter_ns", "monotonic", "monotonic_ns", "time", "time_ns")
    real = {name: getattr(time, name) for name in clocks}

    def fake(name):
        def clock():
            if threading.get_ident() != owner:
                return real[name]()
            state["ns"] += 1  # strictly increasing, like a real clock
            return state["ns"] if name.endswith("_ns") else state["ns"] / 1e9
        return clock

    fakes = {name: fake(name) for name in clocks}

    class Scheduled(torch.nn.Module):
        def forward(self, x):
            times = schedule[str(x.shape[0])]
            done = sum(1 for shape, _, _ in calls if shape[0] == x.shape[0])
            state["ns"] += times[min(done, len(times) - 1)] * 1_000_000
            calls.append([list(x.shape), torch.is_grad_enabled(), self.training])
            return x

    target = globals()[function]
    notebook = getattr(target, "__globals__", {})  # the notebook's names, not a copy
    aliases = {key: fakes[name] for key, value in list(notebook.items()) for name in clocks
               if value is real[name]}
    saved = {key: notebook[key] for key in aliases}
    default_timer = timeit.default_timer
    model = Scheduled().train()
    try:
        for name in clocks:
            setattr(time, name, fakes[name])
        timeit.default_timer = fakes["perf_counter"]
        notebook.update(aliases)
        if function == "measure_latency":
            result = target(model, torch.zeros(*args), **kwargs)
        else:
            result = target(model, *args, **kwargs)
    finally:
        for name in clocks:
            setattr(time, name, real[name])
        timeit.default_timer = default_timer
        notebook.update(saved)
    key_types = [type(key).__name__ for key in result] if isinstance(result, dict) else None
    return result, key_types, calls, model.training


_QUANTILE_METHODS = ("inverted_cdf", "averaged_inverted_cdf", "closest_observation",
                     "interpolated_inverted_cdf", "hazen", "weibull", "linear", "median_unbiased",
                     "normal_unbiased", "lower", "higher", "midpoint", "nearest")


def _percentile_range(values: list[int], q: float) -> tuple[int, int]:
    """The samples on either side of every standard definition of the q-quantile of ``values``
    (numpy's thirteen methods: Hyndman and Fan's nine, nearest rank, lower, higher, midpoint):
    whichever definition a student picks, the value lies in this closed interval."""
    import numpy as np

    ordered = sorted(values)
    found = [float(np.quantile(ordered, q, method=m)) for m in _QUANTILE_METHODS]
    return (max(v for v in ordered if v <= min(found)), min(v for v in ordered if v >= max(found)))


def _in_inference_mode(calls: list[list]) -> str:
    """What was wrong with the forwards a timing function made: "" if every one ran in eval mode
    under no_grad."""
    problems = []
    if any(grad for _, grad, _ in calls):
        problems.append("with autograd on (use torch.no_grad())")
    if any(training for _, _, training in calls):
        problems.append("in training mode (call model.eval() first)")
    return " and ".join(problems)


@pytest.mark.points(2)
def test_measure_latency_percentiles(student, rng):
    """On a clock the grader controls, each timed call takes a known number of milliseconds:
    the median, p10 and p90 are those of exactly the reps timed calls (any standard percentile
    definition), in milliseconds; the warm-up calls are not timed; every call runs in inference
    mode (eval, no_grad), and the training flag is restored."""
    reps, warmup = rng.choice([21, 31, 41]), rng.randint(1, 4)
    timed = rng.sample(range(1, 400), reps)  # distinct: every percentile is pinned down
    warm = [rng.randint(1000, 2000) for _ in range(warmup)]  # slower than any timed call
    got, _, calls, training_after = student.drive(
        _timed_on_the_graders_clock, "measure_latency", {"2": warm + timed}, [2],
        {"warmup": warmup, "reps": reps})
    assert len(calls) == warmup + reps, (
        f"measure_latency(..., warmup={warmup}, reps={reps}) should call the model "
        f"{warmup + reps} times, it called it {len(calls)} times"
    )
    assert isinstance(got, dict), f"measure_latency should return a dict, got {got!r}"
    for key, q in [("p10_ms", 0.1), ("median_ms", 0.5), ("p90_ms", 0.9)]:
        low, high = _percentile_range(timed, q)
        value = got.get(key)
        assert isinstance(value, (int, float)) and low - 1e-3 <= value <= high + 1e-3, (
            f"measure_latency: after {warmup} warm-up calls, the {reps} timed calls took "
            f"{sorted(timed)} ms (on a clock the grader controls, read with time.perf_counter); "
            f"{key} should be their {round(100 * q)}th percentile, between {low} and {high} ms "
            f"whichever standard definition is used, got {value!r}"
        )
    wrong = _in_inference_mode(calls)
    assert not wrong, f"measure_latency ran the model {wrong}: time it in inference mode"
    assert training_after, "the model was in train mode: measure_latency must restore it"


# ------------------------------------------------------------------------------------------
# 7. Arithmetic intensity and the roofline

A100_PEAK, A100_BANDWIDTH = 312e12, 2.039e12  # fp16 tensor FLOP/s; bytes/s (80 GB)


@pytest.mark.points(2)
def test_arithmetic_intensity_linear(student, rng):
    """2*B*I*O FLOPs / (bytes_per_element * (B*I + I*O + B*O)) bytes."""
    cases = [(512, 4096, 1024, 2), (1, 4096, 1024, 2)]  # the lecture's A100 rows
    cases += [(rng.choice([1, 3, 16, 100, 256, 1000]), rng.randint(8, 5000),
               rng.randint(8, 5000), rng.choice([1, 2, 4])) for _ in range(8)]
    cases.append((rng.choice([1, 7, 64]), rng.randint(8, 5000), rng.randint(8, 5000), None))
    for b, i, o, nbytes in cases:  # None: the default, 2 bytes (fp16)
        expected = 2 * b * i * o / ((nbytes or 2) * (b * i + i * o + b * o))
        given = {} if nbytes is None else {"bytes_per_element": nbytes}
        got = student.call("arithmetic_intensity_linear", b, i, o, **given)
        assert _rel_close(got, expected), (
            f"arithmetic_intensity_linear({b}, {i}, {o}, bytes_per_element="
            f"{nbytes or '2 (the default)'}) should be 2*B*I*O / (bytes * (B*I + I*O + B*O)) = "
            f"{expected:.10g} FLOP/byte, got {got}"
        )


@pytest.mark.points(1)
def test_arithmetic_intensity_elementwise(student, rng):
    """Read one tensor, write one of the same size: flops_per_element / (2 * bytes)."""
    cases = [(1, 2), (9, 2), (8, 2)]  # ReLU, MaxPool 3x3 stride 1, LayerNorm in fp16
    cases += [(rng.choice([1, 2, 3, 5, 8, 9, 25, 0.5]), rng.choice([1, 2, 4, 8]))
              for _ in range(7)]
    cases.append((rng.choice([1, 3, 9, 25]), None))
    for f, nbytes in cases:  # None: the default, 2 bytes (fp16)
        expected = f / (2 * (nbytes or 2))
        given = {} if nbytes is None else {"bytes_per_element": nbytes}
        got = student.call("arithmetic_intensity_elementwise", f, **given)
        assert _rel_close(got, expected), (
            f"arithmetic_intensity_elementwise({f}, bytes_per_element="
            f"{nbytes or '2 (the default)'}) should be {f} / (2 * {nbytes or 2}) = {expected} "
            f"FLOP/byte, got {got}"
        )


@pytest.mark.points(2)
def test_roofline_and_bound(student, rng):
    """Attainable = min(peak, ai * bandwidth); "memory" below the ridge peak / bandwidth, and
    "compute" from the ridge point on (the task: at exactly the ridge point, "compute")."""
    cases = []
    for side in ["memory", "compute"] * 5:
        peak, bandwidth = 10 ** rng.uniform(9, 15), 10 ** rng.uniform(9, 13)
        factor = rng.uniform(0.01, 0.9) if side == "memory" else rng.uniform(1.1, 100)
        cases.append((factor * peak / bandwidth, peak, bandwidth, side))
    cases.append((1.0, A100_PEAK, A100_BANDWIDTH, "memory"))
    cases.append((315.0, A100_PEAK, A100_BANDWIDTH, "compute"))
    # exactly at the ridge: integers below 2**53, so that peak / bandwidth, ai * bandwidth and
    # min(peak, ai * bandwidth) are exact in floating point, whichever way the student compares
    ridge, bandwidth = rng.randint(1, 400), rng.randint(1, 3000) * 10**9
    cases.append((float(ridge), float(ridge * bandwidth), float(bandwidth), "compute"))
    for ai, peak, bandwidth, side in cases:
        expected = min(peak, ai * bandwidth)
        got = student.call("roofline", ai, peak, bandwidth)
        assert _rel_close(got, expected), (
            f"roofline({ai:.6g}, {peak:.6g}, {bandwidth:.6g}) should be "
            f"min(peak, ai * bandwidth) = {expected:.6g} FLOP/s, got {got}"
        )
        got = student.call("bound", ai, peak, bandwidth)
        where = ("exactly at" if ai == peak / bandwidth
                 else "below" if side == "memory" else "above")
        assert got == side, (
            f"bound({ai:.6g}, {peak:.6g}, {bandwidth:.6g}): the ridge point is "
            f"{peak / bandwidth:.6g} FLOP/byte and ai is {where} it, so it should be {side!r}, "
            f"got {got!r}"
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
    got = _count(student.call("elementwise_flops",
                              layer(name, *args, training=training, **kwargs), shape))
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
    """LayerNorm 7 per element (5 without affine); BatchNorm 7 (5 without affine) with the
    batch's statistics, in training mode or in either mode when built with
    track_running_stats=False, and 2 with its running statistics in eval mode (a_c x + b_c)."""
    cases = [("LayerNorm", True, None), ("LayerNorm", False, None),
             ("BatchNorm2d", True, True), ("BatchNorm2d", False, True),
             ("BatchNorm2d", True, False), ("BatchNorm2d", False, False),
             ("BatchNorm1d", rng.random() < 0.5, True), ("BatchNorm1d", rng.random() < 0.5, False),
             (rng.choice(["BatchNorm1d", "BatchNorm2d"]), rng.random() < 0.5, "no statistics")]
    for name, affine, training in cases:
        if name == "LayerNorm":
            shape = _draw_shape(rng, rng.randint(2, 3))
            normalized = list(shape[-rng.randint(1, len(shape) - 1):])
            _check_elementwise(student, name, (normalized,), {"elementwise_affine": affine},
                               rng.random() < 0.5, shape, _NORM_FLOPS[affine],
                               f"LayerNorm, elementwise_affine={affine}")
            continue
        shape = _draw_shape(rng, 4 if name == "BatchNorm2d" else rng.randint(2, 3))
        if training == "no statistics":  # eval mode, but no running statistics to use
            _check_elementwise(student, name, (shape[1],),
                               {"affine": affine, "track_running_stats": False}, False, shape,
                               _NORM_FLOPS[affine], f"batch statistics (track_running_stats="
                               f"False, so even in eval mode), affine={affine}")
            continue
        per_element = _NORM_FLOPS[affine] if training else _BN_INFERENCE_FLOPS
        rule = (f"batch statistics, affine={affine}" if training
                else "inference: one multiplication and one addition")
        _check_elementwise(student, name, (shape[1],), {"affine": affine}, training, shape,
                           per_element, rule)


def _outside_the_table(rng: random.Random, shape: tuple[int, ...]) -> Spec:
    """A module that section 8's table has no row for, fitting an input of ``shape``."""
    return rng.choice([("Tanh", (), {}), ("Sigmoid", (), {}), ("SiLU", (), {}),
                       ("Dropout", (0.25,), {}), ("Identity", (), {}), ("Softmax", (), {"dim": 1}),
                       ("MaxPool2d", (2,), {}), ("Conv2d", (shape[1], 3, 1), {}),
                       ("Linear", (shape[-1], 5), {})])


@pytest.mark.points(1)
def test_elementwise_flops_refuses_other_layers(student, rng):
    """A module outside the table (Tanh, Sigmoid, Dropout, pooling, Conv2d, Linear, ...) raises
    a ValueError, as the docstring says, rather than returning a guessed count (and a ReLU,
    inside it, is counted)."""
    shape = _draw_shape(rng, 4)
    _check_elementwise(student, "ReLU", (), {}, False, shape, 1, "one comparison")
    for _ in range(3):
        shape = _draw_shape(rng, 4)
        name, args, kwargs = _outside_the_table(rng, shape)
        described = f"elementwise_flops(nn.{name}(*{args}, **{kwargs}), {shape})"
        try:
            got = student.call("elementwise_flops", layer(name, *args, **kwargs), shape)
        except StudentRaised as error:
            assert error.ename == "ValueError", (
                f"{described} should raise a ValueError (the table has no row for "
                f"nn.{name}); it raised {error.ename}: {error.message}"
            )
            continue
        raise AssertionError(f"{described} returned {got!r}: the table has no row for "
                             f"nn.{name}, so it should raise a ValueError")


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
    got = _count(student.call("model_flops", spec, shape, fold_bn=fold_bn))
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
    local = nn.Sequential(*map(_built, specs))
    expected = (2 * b * t * (f * h + h * o)
                + (_NORM_FLOPS[affine] + _GELU_FLOPS[approximate]) * b * t * h)
    _check_model_flops(student, seq(*map(_sent, specs)), local,
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
_ENTRIES = {"in_proj": "self_attn.in_proj", "out_proj": "self_attn.out_proj",
            "linear1": "linear1", "linear2": "linear2"}  # attention_model_macs' names


def _encoder_entries(name: str, per_layer: dict[str, int], calls: int = 1) -> dict[str, int]:
    """attention_model_macs' entries for an encoder layer named ``name`` that runs ``calls``
    times, each call costing ``per_layer`` (from _encoder_macs)."""
    return {f"{name}.{entry}": calls * per_layer[key] for key, entry in _ENTRIES.items()}


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
    return _counts(got)


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
            expected |= _encoder_entries(str(i), per_layer)
        local = nn.Sequential(*map(_built, specs)).eval()
        counted = sum(_flops_by_operator(local, torch.zeros(shape), fast_path=False).values())
        products = n_layers * (per_layer["qk"] + per_layer["av"])
        oracles_agree(counted == 2 * (sum(expected.values()) + products),
                       f"FlopCounterMode on an attention model {cfg}")
        model = seq(*map(_sent, specs), training=rng.random() < 0.5)
        got = _counts(student.drive(_attention_macs_with_fast_path, model, shape, fast_path))
        described = (f"Sequential(Linear({f_in}, {d}), {n_layers} x TransformerEncoderLayer({d}, "
                     f"{heads}, dim_feedforward={ff}, batch_first={batch_first}), Linear({d}, "
                     f"{f_out})) on {shape}, fast path {'enabled' if fast_path else 'disabled'}")
        assert got == expected, (
            f"attention_model_macs({described}) should be {expected} (the Linear layers by name, "
            f"each encoder layer's four weight matmuls on all {tokens} tokens), got {got}"
        )


@pytest.mark.points(2)
def test_attention_model_macs_conv_front_and_many_layers(student, rng):
    """A nested front (a group conv, Flatten, Linear) by qualified name ("0.0", "0.2"), an
    encoder layer named "1", and after it more than ten layers, so that names like "10" start
    with the encoder's name without being inside it: they are counted as Linear layers."""
    # every factor of C_out H_out W_out (C_in / groups) k_h k_w differs from 1
    groups = rng.choice([2, 3])
    c_in, tokens_per = groups * rng.randint(2, 3), groups * rng.randint(2, 4)
    kernel, stride = rng.choice([(2, 3), (3, 2), (3, 5), 3]), rng.choice([1, 2, (2, 1)])
    n, hw = rng.randint(1, 4), (rng.randint(5, 9), rng.randint(5, 9))
    width = math.prod(_out_hw(*hw, kernel, stride))
    heads = rng.choice([2, 4])
    d, ff, f_out, blocks = heads * rng.choice([2, 3, 4]), rng.randint(4, 48), rng.randint(2, 9), 5
    front = [("Conv2d", (c_in, tokens_per, kernel), {"stride": stride, "groups": groups}),
             ("Flatten", (2,), {}), ("Linear", (width, d), {})]
    encoder = ("TransformerEncoderLayer", (d, heads),
               {"dim_feedforward": ff, "dropout": 0.0, "batch_first": True})
    tail = [("Linear", (d, d), {}), ("ReLU", (), {})] * blocks + [("Linear", (d, f_out), {})]
    per_layer = _encoder_macs(d, heads, ff, n, tokens_per)
    tokens = n * tokens_per
    expected = {"0.0": _conv_macs(c_in, tokens_per, kernel, hw, stride, groups=groups, batch=n),
                "0.2": tokens * width * d, **_encoder_entries("1", per_layer)}
    expected |= {str(2 + i): tokens * d * d for i in range(0, 2 * blocks, 2)}
    expected[str(2 + 2 * blocks)] = tokens * d * f_out
    local = nn.Sequential(nn.Sequential(*map(_built, front)), _built(encoder),
                          *map(_built, tail)).eval()
    shape = (n, c_in, *hw)
    counted = sum(_flops_by_operator(local, torch.zeros(shape), fast_path=False).values())
    oracles_agree(counted == 2 * (sum(expected.values()) + per_layer["qk"] + per_layer["av"]),
                  f"FlopCounterMode on {local}")
    model = seq(seq(*map(_sent, front)), _sent(encoder), *map(_sent, tail),
                training=rng.random() < 0.5)
    got = _counts(student.drive(_attention_macs_with_fast_path, model, shape, rng.random() < 0.5))
    assert got == expected, (
        f"attention_model_macs(Sequential(Sequential(Conv2d({c_in}, {tokens_per}, {kernel}, "
        f"stride={stride}, groups={groups}), Flatten(2), Linear({width}, {d})), "
        f"TransformerEncoderLayer({d}, {heads}, dim_feedforward={ff}, batch_first=True), "
        f"{blocks} x (Linear({d}, {d}), ReLU), Linear({d}, {f_out})), {shape}) should be "
        f"{expected}: every Conv2d and Linear outside the encoder layer by its qualified name "
        f"(the layers named 10, 11, 12 are not inside the layer named 1), got {got}"
    )


def _attention_macs_of_a_masked_model(f_in: int, d: int, heads: int, ff: int, f_out: int,
                                      input_shape: tuple[int, int, int]):
    """Run in the kernel: attention_model_macs of a model written as a class (children named
    proj, encoder, head) whose encoder layer is called with an attention mask as a second
    positional argument, as transformer code often does."""
    import torch
    from torch import nn

    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(f_in, d)
            self.encoder = nn.TransformerEncoderLayer(d, heads, dim_feedforward=ff, dropout=0.0,
                                                      batch_first=True)
            self.head = nn.Linear(d, f_out)

        def forward(self, x):
            steps = x.shape[1]
            causal = torch.triu(torch.full((steps, steps), float("-inf")), diagonal=1)
            return self.head(self.encoder(self.proj(x), causal))

    return attention_model_macs(Masked(), input_shape)  # noqa: F821 - the notebook's function


@pytest.mark.points(1)
def test_attention_model_macs_masked_custom_model(student, rng):
    """A model written as a class, its encoder layer called as encoder(x, mask): the layer's
    input is the first of its inputs; names are the qualified names (proj, encoder.linear1...)."""
    cfg = _draw_encoder(rng, even_heads=rng.random() < 0.5)
    d, heads, ff, batch, seq_len = cfg["d"], cfg["heads"], cfg["ff"], cfg["batch"], cfg["seq"]
    f_in, f_out = rng.randint(2, 12), rng.randint(2, 12)
    tokens, per_layer = batch * seq_len, _encoder_macs(d, heads, ff, batch, seq_len)
    expected = {"proj": tokens * f_in * d, "head": tokens * d * f_out,
                **_encoder_entries("encoder", per_layer)}
    shape = (batch, seq_len, f_in)
    got = _counts(student.drive(_attention_macs_of_a_masked_model, f_in, d, heads, ff, f_out,
                                shape))
    assert got == expected, (
        f"attention_model_macs of a model with children proj = Linear({f_in}, {d}), encoder = "
        f"TransformerEncoderLayer({d}, {heads}, dim_feedforward={ff}, batch_first=True) called "
        f"as encoder(x, mask), head = Linear({d}, {f_out}), on {shape}, should be {expected} "
        f"(the encoder layer's input is the first of its inputs), got {got}"
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
    except StudentRaised as error:
        assert error.ename == "ValueError" and "attention" in error.message.lower(), (
            f"model_macs on a model with a TransformerEncoderLayer should raise a ValueError "
            f"that names nn.MultiheadAttention; it raised {error.ename}: {error.message}"
        )
        return
    raise AssertionError(
        f"model_macs on a model with a TransformerEncoderLayer returned {got}: its hooks cannot "
        f"see the attention projections, so it should raise a ValueError naming "
        f"nn.MultiheadAttention"
    )


@pytest.mark.points(1)
def test_inputs_of_the_wrong_width_are_refused(student, rng):
    """linear_macs and encoder_layer_macs raise ValueError when the input's last dimension is
    not the layer's width (in_features, d_model), as their docstrings promise."""
    fin, fout = rng.randint(2, 64), rng.randint(2, 64)
    for wrong in (fin - rng.randint(1, fin - 1), fin + rng.randint(1, 8)):
        shape = (rng.randint(1, 8), wrong)
        refuses(student, "linear_macs", fin, fout, shape,
                why=f"the last dimension {wrong} is not in_features={fin}")
    cfg = _draw_encoder(rng, even_heads=True)
    d, batch_first = cfg["d"], rng.random() < 0.5
    spec = layer("TransformerEncoderLayer", d, cfg["heads"], dim_feedforward=cfg["ff"],
                 dropout=0.0, batch_first=batch_first)
    wrong = d + rng.choice([-1, 1]) * rng.randint(1, d - 1)
    shape = (cfg["batch"], cfg["seq"], wrong) if batch_first else (cfg["seq"], cfg["batch"], wrong)
    refuses(student, "encoder_layer_macs", spec, shape,
            why=f"the last dimension {wrong} is not d_model={d}")


# ------------------------------------------------------------------------------------------
# 10. FlopCo (flopco-pytorch 0.1.4), run for real in the grader's process
#
# What it reports per Conv2d / Linear: 2 x the MACs of one sample (conv: H_out W_out C_out
# C_in k_h k_w, with C_in read as 1 whenever groups != 1) or of one row (Linear: in * out),
# plus, with a bias, C_out H_out W_out (conv) or in_features (Linear: it unpacks the weight's
# (out, in) shape as (in, out)).


def _flopco_conv(c_in, c_out, kernel, groups, out_hw, bias) -> int:
    (kh, kw), (h, w) = pair(kernel), out_hw
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
    got = _counts(student.call("flopco_prediction", spec, shape))
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
    local = nn.Sequential(*map(_built, specs))
    _check_flopco(student, seq(*map(_sent, specs)), local,
                  (n, c_in, h, w), expected,
                  f"Sequential(Conv2d({c_in}, {c_mid}, {k}, groups={groups}, bias={bias1}), ReLU, "
                  f"Conv2d({c_mid}, {c_mid}, 3, groups={c_mid}, padding=1, bias={bias2}))")
    f_in, hidden, f_out = rng.randint(3, 24), rng.randint(3, 24), rng.randint(2, 12)
    bias1, bias2 = rng.random() < 0.5, rng.random() < 0.5
    specs = [("Linear", (f_in, hidden), {"bias": bias1}), ("GELU", (), {}),
             ("Linear", (hidden, f_out), {"bias": bias2})]
    expected = {"0": _flopco_linear(f_in, hidden, bias1), "2": _flopco_linear(hidden, f_out, bias2)}
    local = nn.Sequential(*map(_built, specs))
    _check_flopco(student, seq(*map(_sent, specs)), local,
                  (rng.randint(2, 5), rng.randint(2, 9), f_in), expected,
                  f"Sequential(Linear({f_in}, {hidden}, bias={bias1}), GELU, Linear({hidden}, "
                  f"{f_out}, bias={bias2}))")


# ------------------------------------------------------------------------------------------
# Every hook-based counter (model_macs, model_flops, attention_model_macs, flopco_prediction)
# removes the hooks it adds, and adds up the calls of a layer that runs twice in one forward
# (weights shared, as ALBERT shares its encoder layer), keyed by the layer's one qualified name
# (the first, as model.named_modules() gives it).


def _hooks_left_by(function: str, model, input_shape):
    """Run in the kernel: call the notebook's ``function(model, input_shape)``; return what it
    returned and the number of forward hooks (and pre-hooks) left afterwards on the model's
    modules, or registered globally for every module, that were not there before."""
    from torch.nn.modules import module as torch_module

    registries = ("_global_forward_hooks", "_global_forward_pre_hooks")

    def hooks():
        local = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
        return local + sum(len(getattr(torch_module, name, {})) for name in registries)

    before = hooks()
    result = globals()[function](model, input_shape)
    return result, hooks() - before


@pytest.mark.points(1)
def test_counters_leave_no_hooks(student, rng):
    """model_macs, model_flops, attention_model_macs and activation_peak_bytes count right and
    remove every hook they add (a hook left behind runs, and costs, at every later forward of
    the model)."""
    channels, shape = _draw_cnn(rng)
    cnn = kit_model("make_cnn", channels=channels, training=rng.random() < 0.5)
    cfg = _draw_encoder(rng, even_heads=True)
    d, f_in, batch, seq_len = cfg["d"], rng.randint(2, 9), cfg["batch"], cfg["seq"]
    attention = seq(layer("Linear", f_in, d),
                    layer("TransformerEncoderLayer", d, cfg["heads"], dim_feedforward=cfg["ff"],
                          batch_first=True))
    per_layer = _encoder_macs(d, cfg["heads"], cfg["ff"], batch, seq_len)
    with_attention = {"0": batch * seq_len * f_in * d, **_encoder_entries("1", per_layer)}
    for function, model, input_shape, expected in [
            ("model_macs", cnn, shape, _cnn_macs(channels, shape)),
            ("model_flops", cnn, shape, _cnn_flops(channels, shape, False)),
            ("attention_model_macs", attention, (batch, seq_len, f_in), with_attention),
            ("activation_peak_bytes", cnn, shape, _activation_rule(
                nncourse.make_cnn(channels).eval(), torch.zeros(shape)))]:
        got, left = student.drive(_hooks_left_by, function, model, input_shape)
        got = _counts(got) if isinstance(got, dict) else _count(got)
        assert got == expected, f"{function} on {input_shape} should be {expected}, got {got}"
        assert left == 0, (
            f"{function} left {left} hook(s) on the model (or registered for every module): "
            f"remove each handle it registered before returning"
        )



def _weight_tied_counts(function: str, f_in: int, d: int, f_out: int, encoder: dict | None,
                        input_shape: tuple[int, ...]):
    """Run in the kernel: the notebook's ``function`` on Sequential(Linear(f_in, d), X,
    ReLU, X, Linear(d, f_out)) where X is one module used twice: a Linear(d, d), or, with
    ``encoder`` (d_model, nhead, dim_feedforward), one batch_first TransformerEncoderLayer."""
    from torch import nn

    if encoder is None:
        shared = nn.Linear(d, d)
    else:
        shared = nn.TransformerEncoderLayer(encoder["d"], encoder["heads"],
                                            dim_feedforward=encoder["ff"], dropout=0.0,
                                            batch_first=True)
    model = nn.Sequential(nn.Linear(f_in, d), shared, nn.ReLU(), shared, nn.Linear(d, f_out))
    return globals()[function](model.eval(), input_shape)


@pytest.mark.points(2)
def test_counters_add_up_a_layer_that_runs_twice(student, rng):
    """model_macs, flopco_prediction and attention_model_macs on Sequential(Linear, X, ReLU, X,
    Linear) where X (a Linear, or for attention_model_macs also a transformer encoder layer) is
    one module run twice: its entry, under its first name "1", is the sum of both calls."""
    cfg = _draw_encoder(rng, even_heads=True)
    d, batch, seq_len = cfg["d"], cfg["batch"], cfg["seq"]
    f_in, f_out, tokens = rng.randint(2, 12), rng.randint(2, 12), batch * seq_len
    shape = (batch, seq_len, f_in)
    shared = nn.Linear(d, d)
    local = nn.Sequential(nn.Linear(f_in, d), shared, nn.ReLU(), shared, nn.Linear(d, f_out))
    macs = {"0": tokens * f_in * d, "1": 2 * tokens * d * d, "4": tokens * d * f_out}
    oracles_agree(_counted_flops(local, torch.zeros(shape)) == 2 * sum(macs.values()),
                  "FlopCounterMode on a weight-tied model")
    reported = {"0": _flopco_linear(f_in, d, True), "1": 2 * _flopco_linear(d, d, True),
                "4": _flopco_linear(d, f_out, True)}
    oracles_agree(_flopco_report(local, shape) == reported, "FlopCo on a weight-tied model")
    per_layer = _encoder_macs(d, cfg["heads"], cfg["ff"], batch, seq_len)
    with_encoder = {"0": macs["0"], "4": macs["4"], **_encoder_entries("1", per_layer, calls=2)}
    described = f"Sequential(Linear({f_in}, {d}), X, ReLU, X, Linear({d}, {f_out})) on {shape}"
    for function, encoder, expected, what in [
            ("model_macs", None, macs, f"X = one Linear({d}, {d})"),
            ("flopco_prediction", None, reported, f"X = one Linear({d}, {d})"),
            ("attention_model_macs", None, macs, f"X = one Linear({d}, {d})"),
            ("attention_model_macs", cfg, with_encoder,
             f"X = one TransformerEncoderLayer({d}, {cfg['heads']}, dim_feedforward="
             f"{cfg['ff']}, batch_first=True)")]:
        got = _counts(student.drive(_weight_tied_counts, function, f_in, d, f_out, encoder,
                                    shape))
        assert got == expected, (
            f"{function}({described}, {what} used twice) should be {expected}: X runs twice, "
            f"so its entry (under its name, 1) is the sum of both calls; got {got}"
        )


# ------------------------------------------------------------------------------------------
# Names: every counter keyed by qualified module names (model_macs, flopco_prediction,
# attention_model_macs) names each entry as model.named_modules() does: nested modules with
# dots ("0.1", "block1.body.conv1"), and the model itself "" when it is one Conv2d, Linear or
# encoder layer (whose entries are then "self_attn.in_proj", ..., "linear2", no leading dot).


def _nested_specs(rng: random.Random) -> tuple[ModuleSpec, nn.Module, tuple[int, ...],
                                               dict[str, int], dict[str, int]]:
    """Sequential(Sequential(Conv2d, ReLU), Sequential(Sequential(Conv2d 1x1), pool, Flatten,
    Linear)): (spec, its twin, input shape, MACs by name, FlopCo's FLOPs by name)."""
    groups = rng.choice([1, 2])
    c_in, c1 = groups * rng.randint(1, 3), groups * rng.randint(2, 4)
    c2, n_out, k = rng.randint(2, 6), rng.randint(2, 7), rng.choice([1, 3, (3, 1)])
    bias1, bias2 = rng.random() < 0.5, rng.random() < 0.5
    n, hw = rng.randint(1, 3), (rng.randint(4, 8), rng.randint(4, 8))
    inner = [("Conv2d", (c1, c2, 1), {"bias": bias2})]
    front = [("Conv2d", (c_in, c1, k), {"groups": groups, "bias": bias1}), ("ReLU", (), {})]
    back = [("AdaptiveAvgPool2d", (1,), {}), ("Flatten", (), {}), ("Linear", (c2, n_out), {})]
    spec = seq(seq(*map(_sent, front)), seq(seq(*map(_sent, inner)), *map(_sent, back)))
    twin = nn.Sequential(nn.Sequential(*map(_built, front)),
                         nn.Sequential(nn.Sequential(*map(_built, inner)), *map(_built, back)))
    out_hw = _out_hw(*hw, k)
    macs = {"0.0": _conv_macs(c_in, c1, k, hw, groups=groups, batch=n),
            "1.0.0": _conv_macs(c1, c2, 1, out_hw, batch=n), "1.3": n * c2 * n_out}
    reported = {"0.0": _flopco_conv(c_in, c1, k, groups, out_hw, bias1),
                "1.0.0": _flopco_conv(c1, c2, 1, 1, out_hw, bias2),
                "1.3": _flopco_linear(c2, n_out, True)}
    return spec, twin, (n, c_in, *hw), macs, reported


def _resnet_macs(channels: int, blocks: int, shape) -> dict[str, int]:
    """make_resnet's convolutions and fc by qualified name (every map is n * c * h * w)."""
    n, _, h, w = shape
    fmap = n * channels * h * w
    macs = {"stem.conv": fmap * 9, "fc": n * channels * 10}
    for i in range(1, blocks + 1):
        macs |= {f"block{i}.body.conv1": fmap * channels * 9,
                 f"block{i}.body.conv2": fmap * channels * 9}
    return macs


@pytest.mark.points(2)
def test_counters_name_the_root_itself_and_nested_modules(student, rng):
    """model_macs, flopco_prediction and attention_model_macs key each entry by its qualified
    name as model.named_modules() gives it: "" for a model that is itself one Conv2d, Linear or
    encoder layer (the encoder's entries then "self_attn.in_proj", ..., "linear2", without a
    leading dot), and dotted names for nested modules ("1.0.0", "block1.body.conv1")."""
    cfg = _draw_conv(rng, rng.choice(["standard", "group", "stride"]))
    conv = ("Conv2d", (cfg["c_in"], cfg["c_out"], cfg["kernel_size"]),
            {"stride": cfg["stride"], "padding": cfg["padding"], "groups": cfg["groups"],
             "bias": rng.random() < 0.5})
    conv_shape = (cfg["batch"], cfg["c_in"], *cfg["input_hw"])
    conv_out = _out_hw(*cfg["input_hw"], cfg["kernel_size"], cfg["stride"], cfg["padding"])
    b, t, f, o = rng.randint(1, 4), rng.randint(2, 6), rng.randint(2, 20), rng.randint(2, 20)
    linear, linear_shape = ("Linear", (f, o), {"bias": rng.random() < 0.5}), (b, t, f)
    nested, twin, nested_shape, nested_macs, nested_reported = _nested_specs(rng)
    channels, blocks = rng.choice([2, 3, 4]), rng.randint(1, 2)
    resnet_shape = (rng.randint(1, 3), 1, rng.randint(2, 6), rng.randint(2, 6))
    cases = [
        ("model_macs", _sent(conv), _built(conv), conv_shape, {"": _conv_macs(**cfg)},
         f"nn.Conv2d{conv[1]} with {conv[2]} itself"),
        ("model_macs", _sent(linear), _built(linear), linear_shape, {"": b * t * f * o},
         f"nn.Linear({f}, {o}) itself"),
        ("model_macs", nested, twin, nested_shape, nested_macs, "a model nested three deep"),
        ("model_macs", kit_model("make_resnet", channels=channels, blocks=blocks),
         nncourse.make_resnet(channels, blocks), resnet_shape,
         _resnet_macs(channels, blocks, resnet_shape), f"make_resnet({channels}, {blocks})"),
        ("flopco_prediction", _sent(conv), _built(conv), conv_shape,
         {"": _flopco_conv(cfg["c_in"], cfg["c_out"], cfg["kernel_size"], cfg["groups"],
                           conv_out, conv[2]["bias"])}, f"nn.Conv2d{conv[1]} with {conv[2]}"),
        ("flopco_prediction", nested, twin, nested_shape, nested_reported,
         "a model nested three deep"),
        ("attention_model_macs", _sent(linear), _built(linear), linear_shape,
         {"": b * t * f * o}, f"nn.Linear({f}, {o}) itself"),
    ]
    for function, spec, local, shape, expected, described in cases:
        if function == "flopco_prediction":
            oracles_agree(_flopco_report(local, shape) == expected, f"FlopCo on {described}")
        else:
            oracles_agree(_counted_flops(local.eval(), torch.zeros(shape))
                          == 2 * sum(expected.values()), f"FlopCounterMode on {described}")
        got = _counts(student.call(function, spec, shape))
        assert got == expected, (
            f"{function}({described}, {shape}) should be {expected}: keys are the names "
            f"model.named_modules() gives (the model itself is \"\"), got {got}"
        )
    for batch_first, fast_path in [(True, True), (rng.random() < 0.5, False)]:
        spec, shape, per_layer, described = _encoder_case(rng, batch_first, False)
        expected = {entry: per_layer[key] for key, entry in _ENTRIES.items()}
        got = _counts(student.drive(_attention_macs_with_fast_path, spec, shape, fast_path))
        assert got == expected, (
            f"attention_model_macs of a model that is itself {described}, fast path "
            f"{'enabled' if fast_path else 'disabled'}, should be {expected}: the layer is the "
            f"root, named \"\", so its entries have no prefix (no leading dot), and its own "
            f"Linear modules are counted with it, not again; got {got}"
        )
    encoder_spec, shape, per_layer, described = _encoder_case(rng, True, False)
    d = shape[-1]
    model = seq(seq(layer("Linear", d, d), encoder_spec), layer("Linear", d, 2))
    tokens = shape[0] * shape[1]
    expected = {"0.0": tokens * d * d, "1": tokens * d * 2, **_encoder_entries("0.1", per_layer)}
    got = _counts(student.call("attention_model_macs", model, shape))
    assert got == expected, (
        f"attention_model_macs(Sequential(Sequential(Linear({d}, {d}), {described}), "
        f"Linear({d}, 2)), {shape}) should be {expected} (the encoder layer is named \"0.1\"), "
        f"got {got}"
    )


# ------------------------------------------------------------------------------------------
# Modules in mixed modes: every function that promises to leave a model as it found it
# restores each module's own flag (not one flag for the whole model) and leaves BatchNorm's
# statistics alone.

_MEASURING = ("model_macs", "model_flops", "attention_model_macs", "activation_peak_bytes",
              "measure_latency", "forward_peak_bytes", "throughput")


def _in_mixed_modes(function: str, channels: tuple[int, int, int], state: dict,
                    in_eval: list[str], shape: list[int]):
    """Run in the kernel: make_cnn(channels) with the grader's weights and statistics, the
    modules named in ``in_eval`` in eval mode and the others in training mode, passed to the
    notebook's ``function`` with an input of ``shape``; returns the model afterwards."""
    import torch

    import nncourse

    model = nncourse.make_cnn(channels)
    model.load_state_dict(state)
    model.train()
    for name in in_eval:
        model.get_submodule(name).eval()
    call = globals()[function]
    if function in ("measure_latency", "forward_peak_bytes"):
        extra = {"warmup": 1, "reps": 2} if function == "measure_latency" else {}
        call(model, torch.randn(*shape), **extra)
    elif function == "throughput":
        call(model, tuple(shape[1:]), [shape[0]], warmup=1, reps=1)
    else:
        call(model, tuple(shape))
    return model


@pytest.mark.points(2)
def test_measuring_functions_restore_mixed_modes(student, rng, torch_rng):
    """A model with some modules in eval mode and others in training mode (frozen BatchNorm
    during fine-tuning): model_macs, model_flops, attention_model_macs, activation_peak_bytes,
    measure_latency, forward_peak_bytes and throughput each give every module back its own flag
    (model.train(flag) on the root would overwrite them all) and leave BatchNorm's statistics
    untouched."""
    for function in _MEASURING:
        channels, shape = _draw_cnn(rng)
        state = _random_state(channels, torch_rng)
        names = [name for name, _ in nncourse.make_cnn(channels).named_modules() if name]
        in_eval = sorted(rng.sample([n for n in names if n.startswith("bn")], 1)
                         + rng.sample([n for n in names if not n.startswith("bn")], 2))
        after = student.drive(_in_mixed_modes, function, channels, state, in_eval, list(shape))
        assert hasattr(after, "training"), f"{function}: the model did not come back: {after!r}"
        expected = {name: name not in in_eval for name in ["", *names]}
        wrong = sorted(name or "<model>" for name, flag in expected.items()
                       if after.training.get(name) != flag)
        assert not wrong, (
            f"{function} on make_cnn({channels}) with {in_eval} in eval mode and every other "
            f"module in training mode: afterwards {wrong} are in the other mode. Remember each "
            f"module's own flag and restore it (model.train(was) on the root sets them all)."
        )
        changed = sorted(k for k, v in state.items() if not torch.equal(after.state_dict[k], v))
        assert not changed, (
            f"{function} changed {changed}: measure in eval mode so BatchNorm's running "
            f"statistics are left untouched"
        )


# ------------------------------------------------------------------------------------------
# Models the grader builds in the kernel, for what a spec cannot say: frozen parameters, tied
# weights, a module used twice, mixed dtypes, non-persistent buffers.


def _on_a_grader_model(function: str | None, recipe: list, *args):
    """Run in the kernel (``function`` the notebook's function to call) and in the grader's
    process (``function`` None: the model itself, the kernel's twin). The model is an
    nn.Sequential built from ``recipe``, whose steps are ["layer", torch.nn class, args, kwargs]
    (appends a layer), ["again", i] (appends layer i again: one module, called twice),
    ["tie", i, j] (layer i's weight becomes layer j's very Parameter), ["freeze", i],
    ["dtype", i, dtype name] (i = -1: the whole model) and ["buffer", i, name, shape, dtype
    name, persistent] (a buffer of ones on layer i), applied in that order."""
    import torch
    from torch import nn

    layers = []
    for step in recipe:
        if step[0] == "layer":
            layers.append(getattr(nn, step[1])(*step[2], **step[3]))
        elif step[0] == "again":
            layers.append(layers[step[1]])
    model = nn.Sequential(*layers)
    for step in recipe:
        if step[0] == "tie":
            model[step[1]].weight = model[step[2]].weight
        elif step[0] == "freeze":
            model[step[1]].requires_grad_(False)
        elif step[0] == "dtype":
            (model if step[1] == -1 else model[step[1]]).to(getattr(torch, step[2]))
        elif step[0] == "buffer":
            _, i, name, shape, dtype, persistent = step
            model[i].register_buffer(name, torch.ones(shape, dtype=getattr(torch, dtype)),
                                     persistent=persistent)
    if function is None:
        return model
    return globals()[function](model, *args)


def _tied_language_model(rng: random.Random) -> tuple[list, int, int, str]:
    """An embedding whose matrix the output layer reuses (tied), frozen; two hidden Linear
    layers, one of them frozen too. (recipe, parameters, trainable ones, description)."""
    v, d, h, bias = rng.randint(10, 60), rng.randint(2, 12), rng.randint(2, 16), rng.random() < 0.5
    frozen = rng.choice([1, 3])
    recipe = [["layer", "Embedding", [v, d], {}], ["layer", "Linear", [d, h], {}],
              ["layer", "ReLU", [], {}], ["layer", "Linear", [h, d], {}],
              ["layer", "Linear", [d, v], {"bias": bias}], ["tie", 4, 0], ["freeze", 0],
              ["freeze", frozen]]
    total = v * d + (d * h + h) + (h * d + d) + v * bias
    trainable = total - v * d - (d * h + h if frozen == 1 else h * d + d)
    return recipe, total, trainable, (
        f"Embedding({v}, {d}) (frozen) -> Linear({d}, {h}) -> ReLU -> Linear({h}, {d}) -> "
        f"Linear({d}, {v}, bias={bias}) whose weight is the embedding's (tied), layer {frozen} "
        f"frozen")


def _shared_block(rng: random.Random) -> tuple[list, int, int, str]:
    """Linear -> X -> ReLU -> X -> Linear, X one frozen Linear(d, d) used twice."""
    f, d, o = rng.randint(2, 20), rng.randint(2, 20), rng.randint(2, 20)
    recipe = [["layer", "Linear", [f, d], {}], ["layer", "Linear", [d, d], {}],
              ["layer", "ReLU", [], {}], ["again", 1], ["layer", "Linear", [d, o], {}],
              ["freeze", 1]]
    total = (f * d + d) + (d * d + d) + (d * o + o)
    return recipe, total, total - (d * d + d), (
        f"Linear({f}, {d}) -> X -> ReLU -> X -> Linear({d}, {o}), X one frozen Linear({d}, {d}) "
        f"used twice")


@pytest.mark.points(1)
def test_count_params_frozen_and_shared(student, rng):
    """Trainable or frozen (requires_grad False), every parameter counts; a parameter shared by
    two layers (tied weights) or a module used twice counts once, as parameters() yields it."""
    for recipe, total, trainable, described in [_tied_language_model(rng), _shared_block(rng)]:
        twin = _on_a_grader_model(None, recipe)
        oracles_agree(sum(p.numel() for p in twin.parameters()) == total
                      and sum(p.numel() for p in twin.parameters() if p.requires_grad)
                      == trainable, described)
        got = _count(student.drive(_on_a_grader_model, "count_params", recipe))
        assert got == total, (
            f"count_params of {described} should be {total}: frozen parameters count too (the "
            f"trainable ones alone are {trainable}), and a shared one once; got {got}"
        )


# ------------------------------------------------------------------------------------------
# 11. Memory
#
# Bytes of a dtype: bits / 8, from torch.finfo (floating point) or torch.iinfo (integers).
# A model's size: numel x bytes of each tensor's own dtype; parameters as parameters() yields
# them (each once, frozen included), buffers as named_buffers() yields them (persistent or not).
# The activation rule: for an nn.Sequential in inference, the largest over the children of the
# bytes of the storages of the child's input and output (a shared one once), the model's input
# not counted; the input has the dtype of the first parameter.
# The measured peak: the largest running sum of the profiler's memory events over one forward
# (eval, no_grad, after one warm-up forward), compared with the grader's own measurement of
# the same model and input in its own process (one thread), which is deterministic: 650 drawn
# Sequentials (Linear, Conv2d, BatchNorm, pooling, activations, views, in-place) gave the same
# bytes in two processes, and on the layers that allocate nothing but their outputs (Linear,
# activations, Dropout, Flatten, Identity, Softmax) the activation rule to the byte. The bytes
# of a convolution depend on the number of threads (10 of 60 drawn conv models differ between 1
# and 2): the notebook states one thread, which it sets at the top, and the grader measures on
# one; dense models gave the same bytes on 1 and 2 threads (60 of 60).

_COURSE_DTYPES = ("int8", "uint8", "int32", "int64", "float16", "bfloat16", "float32", "float64")
_OTHER_DTYPES = ("int16", "uint16", "uint32", "uint64", "float8_e4m3fn", "float8_e5m2")


def _bytes_of_dtypes(names: list[str]):
    """Run in the kernel: dtype_bytes of each torch dtype named (a dtype cannot be sent)."""
    import torch

    return [dtype_bytes(getattr(torch, name)) for name in names]  # noqa: F821


@pytest.mark.points(1)
def test_dtype_bytes(student, rng):
    """bits / 8 from torch.finfo or torch.iinfo: every dtype of the course, and others the same
    rule covers (int16, unsigned integers, float8)."""
    names = list(_COURSE_DTYPES) + rng.sample(_OTHER_DTYPES, 3)
    rng.shuffle(names)
    expected = [torch.empty(0, dtype=getattr(torch, n)).element_size() for n in names]
    for name, nbytes in zip(names, expected, strict=True):
        dtype = getattr(torch, name)
        info = torch.finfo(dtype) if dtype.is_floating_point else torch.iinfo(dtype)
        oracles_agree(info.bits == 8 * nbytes, f"bits and element size of {name}")
    got = student.drive(_bytes_of_dtypes, names)
    got = [_count(v) for v in got] if isinstance(got, list) else got
    assert isinstance(got, list) and len(got) == len(names), (
        f"dtype_bytes should return an int for each dtype, got {got!r}")
    wrong = {name: g for name, g, e in zip(names, got, expected, strict=True) if g != e}
    assert not wrong, (
        f"dtype_bytes should be bits / 8 ({dict(zip(names, expected, strict=True))}); these "
        f"differ: {wrong}"
    )


def _formatted(n: int) -> str:
    """format_bytes by exact decimal arithmetic: "n B" below 1024, else n in the largest unit
    of 1024**k (k = 1..4) that is at most n, to two decimals."""
    from decimal import Decimal, localcontext

    if n < 1024:
        return f"{n} B"
    power = max(k for k in range(1, 5) if n >= 1024**k)
    with localcontext() as context:
        context.prec = 80
        value = (Decimal(n) / Decimal(1024**power)).quantize(Decimal("0.01"))
    return f"{value} {('KiB', 'MiB', 'GiB', 'TiB')[power - 1]}"


def _draw_byte_count(rng: random.Random, power: int) -> int:
    """A number of bytes shown in units of 1024**power, away from a rounding tie (x.xx5) and
    from 1023.995 and up (which rounds to 1024.00 of the unit below the next)."""
    unit = 1024**power
    while True:
        n = rng.randint(unit, 1024 * unit - 1) if power else rng.randint(0, 1023)
        if power == 0 or ((200 * n) % (2 * unit) != unit and 100 * n < 102399 * unit):
            return n


@pytest.mark.points(1)
def test_format_bytes(student, rng):
    """n B below 1024; otherwise two decimals in the largest of KiB, MiB, GiB, TiB (powers of
    1024) that is at most n; exact powers of 1024 included."""
    cases = [_draw_byte_count(rng, power) for power in (0, 1, 1, 2, 2, 3, 4)]
    cases += [1024 ** rng.randint(1, 4) * rng.randint(1, 9), rng.choice([1023, 1024])]
    for n in cases:
        expected = _formatted(n)
        power = max([k for k in range(1, 5) if n >= 1024**k], default=0)
        oracles_agree(power == 0 or expected == f"{n / 1024**power:.2f} "
                      f"{('KiB', 'MiB', 'GiB', 'TiB')[power - 1]}", f"format of {n}")
        got = student.call("format_bytes", n)
        assert got == expected, (
            f"format_bytes({n}) should be {expected!r} (powers of 1024: 1 KiB = 1024 B, "
            f"1 MiB = 1024**2 B, ...; two decimals in the largest unit at most n), got {got!r}"
        )


def _draw_sized_layer(rng: random.Random) -> tuple[Spec, int, int]:
    """(a layer, its parameter bytes, its buffer bytes) in float32; BatchNorm's buffers are
    two float32 vectors and an int64 counter, or none without running statistics."""
    kind = rng.choice(["Linear", "Conv2d", "BatchNorm2d", "BatchNorm1d", "LayerNorm"])
    if kind == "Linear":
        i, o, bias = rng.randint(2, 40), rng.randint(2, 30), rng.random() < 0.5
        return (kind, (i, o), {"bias": bias}), 4 * (i * o + o * bias), 0
    if kind == "Conv2d":
        groups = rng.choice([1, 2])
        c_in, c_out, k = groups * rng.randint(1, 6), groups * rng.randint(1, 6), rng.choice([1, 3])
        return (kind, (c_in, c_out, k), {"groups": groups}), (
            4 * (c_out * (c_in // groups) * k * k + c_out)), 0
    if kind == "LayerNorm":
        c = rng.randint(2, 30)
        return (kind, (c,), {}), 4 * 2 * c, 0
    c, affine, stats = rng.randint(2, 40), rng.random() < 0.75, rng.random() < 0.8
    return (kind, (c,), {"affine": affine, "track_running_stats": stats}), (
        4 * 2 * c * affine), (4 * 2 * c + 8) * stats


@pytest.mark.points(1)
def test_model_size_bytes_layers_and_models(student, rng):
    """Parameters and buffers apart, in bytes: 4 per float32 element; BatchNorm's buffers are
    running_mean and running_var (float32) and num_batches_tracked (int64, 8 bytes)."""
    specs = [_draw_sized_layer(rng) for _ in range(4)]
    cases = [(_sent(spec), _built(spec), {"parameters": p, "buffers": b},
              f"nn.{spec[0]}{spec[1]} with {spec[2]}") for spec, p, b in specs]
    channels = (rng.randint(2, 12), rng.randint(2, 12), rng.randint(2, 12))
    c1, c2, c3 = channels
    params = 9 * (c1 + c1 * c2 + c2 * c3) + 2 * (c1 + c2 + c3) + 10 * c3 + 10
    cases.append((kit_model("make_cnn", channels=channels), nncourse.make_cnn(channels),
                  {"parameters": 4 * params, "buffers": 4 * 2 * (c1 + c2 + c3) + 3 * 8},
                  f"make_cnn({channels})"))
    for spec, local, expected, described in cases:
        oracles_agree({"parameters": sum(p.nbytes for p in local.parameters()),
                       "buffers": sum(b.nbytes for b in local.buffers())} == expected, described)
        got = _counts(student.call("model_size_bytes", spec))
        assert got == expected, (
            f"model_size_bytes({described}) should be {expected} (float32: 4 bytes per "
            f"element; BatchNorm's running statistics are float32 buffers and its counter an "
            f"int64 one), got {got}"
        )


def _mixed_model(rng: random.Random) -> tuple[list, dict[str, int], str]:
    """A float16 Linear with a persistent float32 buffer, a BatchNorm1d in float64 or without
    running statistics, a bfloat16 or float32 Linear with a non-persistent buffer, and two
    tied Linear layers: (recipe, expected bytes, description)."""
    f, d, o, bias = rng.randint(2, 16), rng.randint(2, 16), rng.randint(2, 16), rng.random() < 0.5
    stats, last = rng.random() < 0.7, rng.choice(["bfloat16", "float32"])
    mask = rng.choice(["uint8", "float32", "int64"])
    width = {"bfloat16": 2, "float32": 4, "uint8": 1, "int64": 8}
    recipe = [["layer", "Linear", [f, d], {"bias": bias}],
              ["layer", "BatchNorm1d", [d], {"track_running_stats": stats}],
              ["layer", "ReLU", [], {}], ["layer", "Linear", [d, o], {}],
              ["layer", "Linear", [o, o], {"bias": False}],
              ["layer", "Linear", [o, o], {"bias": False}],
              ["dtype", 0, "float16"], ["dtype", 1, "float64"], ["dtype", 3, last],
              ["tie", 5, 4], ["buffer", 0, "scale", [d], "float32", True],
              ["buffer", 3, "mask", [o], mask, False]]
    parameters = 2 * (f * d + d * bias) + 8 * 2 * d + width[last] * (d * o + o) + 4 * o * o
    buffers = 4 * d + (8 * 2 * d + 8) * stats + width[mask] * o
    return recipe, {"parameters": parameters, "buffers": buffers}, (
        f"Linear({f}, {d}, bias={bias}) in float16 with a float32 buffer of {d}, "
        f"BatchNorm1d({d}, track_running_stats={stats}) in float64, ReLU, Linear({d}, {o}) in "
        f"{last} with a non-persistent {mask} buffer of {o}, two Linear({o}, {o}) sharing one "
        f"weight")


@pytest.mark.points(2)
def test_model_size_bytes_dtypes_sharing_and_buffers(student, rng):
    """Each tensor in its own dtype (a float16, a float64 and a bfloat16 layer; BatchNorm's
    counter stays int64); tied weights and a module used twice once, frozen ones included; and
    every buffer named_buffers() yields, the non-persistent ones that state_dict() leaves out
    included."""
    recipe, expected, described = _mixed_model(rng)
    shared, total, _, shared_described = _shared_block(rng)
    tied, tied_total, _, tied_described = _tied_language_model(rng)
    cases = [(recipe, expected, described),
             (shared, {"parameters": 4 * total, "buffers": 0}, shared_described),
             (tied, {"parameters": 4 * tied_total, "buffers": 0}, tied_described)]
    for recipe, expected, described in cases:
        twin = _on_a_grader_model(None, recipe)
        oracles_agree({"parameters": sum(p.nbytes for p in twin.parameters()),
                       "buffers": sum(b.nbytes for _, b in twin.named_buffers())} == expected,
                      described)
        got = _counts(student.drive(_on_a_grader_model, "model_size_bytes", recipe))
        assert got == expected, (
            f"model_size_bytes of {described} should be {expected} (each tensor in its own "
            f"dtype; a shared parameter once; every buffer, persistent or not), got {got}"
        )


_FREES_NOTHING = ("ReLU", "GELU", "Tanh", "Sigmoid", "Dropout", "Identity")


def _draw_chain(rng: random.Random, kind: str) -> tuple[list[Spec], tuple[int, ...]]:
    """A drawn nn.Sequential and its input shape. "dense": Linear layers, activations (ReLU
    in place or not), Dropout, Identity, Flatten, Softmax on (N, F) or (N, T, F) inputs, whose
    operators allocate their outputs and nothing else; "conv": Conv2d, BatchNorm2d, ReLU,
    pooling, then Flatten and Linear, whose operators also allocate temporaries."""
    specs: list[Spec] = []
    if kind == "dense":
        shape = (rng.randint(1, 6), *([rng.randint(2, 12)] if rng.random() < 0.5 else []),
                 rng.randint(2, 48))
        width, dims = shape[-1], len(shape)
        for _ in range(rng.randint(3, 7)):
            pick = rng.choice(["Linear", "Linear", "act", "act", "inplace", "Flatten", "Softmax"])
            if pick == "Linear":
                out = rng.randint(2, 64)
                specs.append(("Linear", (width, out), {"bias": rng.random() < 0.5}))
                width = out
            elif pick == "act":
                specs.append((rng.choice(_FREES_NOTHING), (), {}))
            elif pick == "inplace":
                specs.append(("ReLU", (), {"inplace": True}))
            elif pick == "Softmax":
                specs.append(("Softmax", (), {"dim": -1}))
            elif dims == 3:  # a view: (N, T, F) -> (N, T * F)
                specs.append(("Flatten", (), {}))
                width, dims = width * shape[1], 2
        if not any(name == "Linear" for name, _, _ in specs):
            specs.append(("Linear", (width, rng.randint(2, 16)), {}))
        return specs, shape
    shape = (rng.randint(1, 4), rng.randint(1, 4), rng.randint(4, 10), rng.randint(4, 10))
    channels, (h, w) = shape[1], shape[2:]
    for _ in range(rng.randint(2, 5)):
        pick = rng.choice(["Conv2d", "Conv2d", "BatchNorm2d", "ReLU", "pool"])
        if pick == "Conv2d":
            out = rng.randint(1, 12)
            specs.append(("Conv2d", (channels, out, rng.choice([1, 3])), {"padding": 1}))
            kernel = specs[-1][1][2]
            channels, h, w = out, h + 3 - kernel, w + 3 - kernel
        elif pick == "pool" and min(h, w) >= 2:
            specs.append((rng.choice(["MaxPool2d", "AvgPool2d"]), (2,), {}))
            h, w = h // 2, w // 2
        elif pick in ("BatchNorm2d", "ReLU"):
            specs.append((pick, (channels,) if pick == "BatchNorm2d" else (), {}))
    specs += [("Flatten", (), {}), ("Linear", (channels * h * w, rng.randint(2, 10)), {})]
    return specs, shape


def _activation_rule(model: nn.Sequential, x: torch.Tensor) -> int:
    """The rule, layer by layer in the grader's process: the storages of each child's input
    and output, a shared one once, the model's input not counted."""
    caller = x.untyped_storage().data_ptr()
    peak, current = 0, x
    with torch.no_grad():
        for child in model:
            out = child(current)
            alive = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                     for t in (current, out) if t.untyped_storage().data_ptr() != caller}
            peak, current = max(peak, sum(alive.values())), out
    return peak


def _profiled_peak(model: nn.Module, x: torch.Tensor) -> int:
    """The grader's own measurement: one warm-up forward, then the largest running sum of the
    profiler's memory events over one forward (eval, no_grad, one thread)."""
    import json
    import os
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # no start/stop lines on the grader's stderr
    model.eval()
    with one_thread(), torch.no_grad():
        model(x)
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as session:
            model(x)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "trace.json")
        session.export_chrome_trace(path)
        with open(path, encoding="utf-8") as file:
            events = [e for e in json.load(file)["traceEvents"] if e.get("name") == "[memory]"]
    running = peak = 0
    for event in sorted(events, key=lambda e: e["ts"]):
        running += int(event["args"]["Bytes"])
        peak = max(peak, running)
    return peak


def _described(specs: list[Spec]) -> str:
    return "Sequential(" + ", ".join(f"{n}{a}{k or ''}" for n, a, k in specs) + ")"


@pytest.mark.points(2)
def test_activation_peak_bytes(student, rng):
    """The rule on drawn Sequentials: while a child runs, its input and output are alive (a
    storage they share, Flatten's view or an in-place ReLU, counted once), the model's input is
    not counted; on dense layers the profiler measures the same bytes. The input takes the
    dtype of the model's parameters (a float64 model: 8 bytes per element)."""
    for kind in ["dense", "dense", "dense", "conv", "conv"]:
        specs, shape = _draw_chain(rng, kind)
        local = nn.Sequential(*map(_built, specs)).eval()
        x = torch.zeros(shape)
        expected = _activation_rule(local, x)
        if kind == "dense":
            oracles_agree(_profiled_peak(local, x) == expected, f"profiler on {local}")
        got = _count(student.call("activation_peak_bytes",
                                  seq(*map(_sent, specs), training=rng.random() < 0.5), shape))
        assert got == expected, (
            f"activation_peak_bytes({_described(specs)}, {shape}) should be {expected} bytes "
            f"(the largest, over the layers, of the bytes of the layer's input and output, a "
            f"shared storage once, the model's input not counted), got {got}"
        )
    f, h, o, n = rng.randint(2, 24), rng.randint(2, 24), rng.randint(2, 24), rng.randint(1, 5)
    recipe = [["layer", "Linear", [f, h], {}], ["layer", "GELU", [], {}],
              ["layer", "Linear", [h, o], {}], ["dtype", -1, "float64"]]
    expected = 8 * n * max(h, 2 * h, h + o)
    oracles_agree(_activation_rule(_on_a_grader_model(None, recipe).eval(),
                                   torch.zeros(n, f, dtype=torch.float64)) == expected,
                  "the rule on a float64 model")
    got = _count(student.drive(_on_a_grader_model, "activation_peak_bytes", recipe, (n, f)))
    assert got == expected, (
        f"activation_peak_bytes of Sequential(Linear({f}, {h}), GELU, Linear({h}, {o})) in "
        f"float64 on {(n, f)} should be {expected} bytes: the input takes the model's dtype, "
        f"8 bytes per element; got {got}"
    )


@pytest.mark.points(2)
def test_forward_peak_bytes_matches_the_graders_profiler(student, rng, torch_rng):
    """The largest running sum of the profiler's memory events over one inference forward
    (eval, no_grad) after a warm-up, against the grader's own measurement of the same model and
    input in its own process; on dense layers that is also the activation rule's value."""
    for kind in ["dense", "dense", "conv", "conv"]:
        specs, shape = _draw_chain(rng, kind)
        local = nn.Sequential(*map(_built, specs)).eval()
        x = torch.randn(shape, generator=torch_rng)
        expected = _profiled_peak(local, x)
        if kind == "dense":
            oracles_agree(_activation_rule(local, x) == expected, f"the rule on {local}")
        got = _count(student.call("forward_peak_bytes",
                                  seq(*map(_sent, specs), training=rng.random() < 0.5), x))
        assert got == expected, (
            f"forward_peak_bytes({_described(specs)}, x of shape {shape}): the grader's "
            f"profiler measures a peak of {expected} bytes (eval, no_grad, one warm-up forward, "
            f"then the largest running sum of the memory events of one forward), got {got}"
        )


@pytest.mark.points(1)
def test_forward_peak_bytes_protocol(student, rng, torch_rng):
    """Exactly one warm-up forward and one profiled forward; 0 for a model that allocates
    nothing (no memory event); the model in eval mode (BatchNorm statistics untouched) and its
    training flags restored."""
    _, (after, _) = student.call_inspect("forward_peak_bytes", probe("CallCounter"),
                                         torch.zeros(rng.randint(1, 5)))
    calls = int(after.state_dict["calls"])
    assert calls == 2, (
        f"forward_peak_bytes should run the model twice (one warm-up forward, then one inside "
        f"the profiler's session), it ran it {calls} times"
    )
    name, args = rng.choice([("Identity", ()), ("Flatten", ()), ("Dropout", (0.5,))])
    x = torch.randn(rng.randint(1, 4), rng.randint(1, 4), rng.randint(1, 6), generator=torch_rng)
    oracles_agree(_profiled_peak(getattr(nn, name)(*args), x) == 0, f"profiler on nn.{name}")
    got = _count(student.call("forward_peak_bytes", layer(name, *args, training=True), x))
    assert got == 0, (
        f"forward_peak_bytes(nn.{name}{args}, x of shape {tuple(x.shape)}) should be 0: in eval "
        f"mode it allocates nothing, so the session has no memory event; got {got}"
    )
    channels, (n, _, h, w) = _draw_cnn(rng)
    state = _random_state(channels, torch_rng)
    model = kit_model("make_cnn", channels=channels, state_dict=state, training=True)
    _, (after, _) = student.call_inspect("forward_peak_bytes", model,
                                         torch.randn(n, 1, h, w, generator=torch_rng))
    in_eval = changed_modes(after, training=True)
    assert not in_eval, (
        f"the model was in train mode; after forward_peak_bytes these modules are in eval "
        f"mode: {in_eval}. Restore every module's training flag."
    )
    changed = sorted(k for k, v in state.items() if not torch.equal(after.state_dict[k], v))
    assert not changed, (
        f"forward_peak_bytes changed {changed}: measure in eval mode so BatchNorm's running "
        f"statistics are left untouched"
    )


# ------------------------------------------------------------------------------------------
# 12. Throughput: samples per second = batch / median latency in seconds (measured on a clock
# the grader controls); the roofline's samples per second for a Linear layer =
# min(peak, intensity * bandwidth) / (2 * in * out).


@pytest.mark.points(2)
def test_roofline_throughput(student, rng):
    """min(peak, AI(B) * bandwidth) / (2 * I * O) samples/s, with AI(B) = 2 B I O / (b (B I +
    I O + B O)): in proportion to the batch while memory-bound, flat once compute-bound."""
    cases = [(1, 4096, 1024, 312e12, 2.039e12, 2), (512, 4096, 1024, 312e12, 2.039e12, 2)]
    for _ in range(8):
        i, o, nbytes = rng.randint(16, 4096), rng.randint(16, 4096), rng.choice([1, 2, 4])
        peak, bandwidth = 10 ** rng.uniform(10, 15), 10 ** rng.uniform(9, 13)
        cases.append((rng.choice([1, 2, 7, 64, 500, 4096]), i, o, peak, bandwidth, nbytes))
    cases[-1] = (*cases[-1][:5], None)  # the default: 4 bytes (fp32)
    for batch, i, o, peak, bandwidth, nbytes in cases:
        intensity = 2 * batch * i * o / ((nbytes or 4) * (batch * i + i * o + batch * o))
        expected = min(peak, intensity * bandwidth) / (2 * i * o)
        given = {} if nbytes is None else {"bytes_per_element": nbytes}
        got = student.call("roofline_throughput", batch, i, o, peak, bandwidth, **given)
        assert _rel_close(got, expected), (
            f"roofline_throughput({batch}, {i}, {o}, {peak:.6g}, {bandwidth:.6g}, "
            f"bytes_per_element={nbytes or '4 (the default)'}) should be min(peak, intensity * "
            f"bandwidth) / (2 * {i} * {o}) = {expected:.10g} samples/s (intensity "
            f"{intensity:.6g} FLOP/byte), got {got}"
        )


@pytest.mark.points(2)
def test_throughput_on_the_graders_clock(student, rng):
    """On a clock the grader controls, each forward of a batch of B takes a known number of
    milliseconds: the throughput of B is B / (the median of its reps timed calls, in seconds),
    after warmup untimed calls; one entry per batch size (int keys); zero inputs of shape
    (B, *sample_shape); every call in inference mode (eval, no_grad)."""
    reps, warmup = rng.choice([5, 7, 9]), rng.randint(1, 3)
    sample_shape = tuple(rng.randint(1, 6) for _ in range(rng.randint(1, 2)))
    batch_sizes = sorted(rng.sample([1, 2, 3, 4, 6, 8, 16, 32], 3))
    schedule, timed = {}, {}
    for batch in batch_sizes:
        timed[batch] = rng.sample(range(1, 300), reps)  # distinct: the median is pinned down
        schedule[str(batch)] = [rng.randint(1000, 2000) for _ in range(warmup)] + timed[batch]
    got, key_types, calls, training_after = student.drive(
        _timed_on_the_graders_clock, "throughput", schedule,
        [sample_shape, batch_sizes], {"warmup": warmup, "reps": reps})
    described = (f"throughput(model, {sample_shape}, {batch_sizes}, warmup={warmup}, "
                 f"reps={reps})")
    assert isinstance(got, dict) and key_types == ["int"] * len(got), (
        f"{described} should return a dict keyed by the batch sizes (ints), got {got!r}")
    assert sorted(got) == sorted(map(str, batch_sizes)), (
        f"{described} should have one entry per batch size {batch_sizes}, got keys {sorted(got)}")
    for batch in batch_sizes:
        seen = [shape for shape, _, _ in calls if shape[0] == batch]
        assert seen == [[batch, *sample_shape]] * (warmup + reps), (
            f"{described}: at batch {batch} the model should get {warmup} + {reps} inputs of "
            f"shape {[batch, *sample_shape]}, it got {seen}"
        )
        low, high = _percentile_range(timed[batch], 0.5)
        value = got[str(batch)]
        assert (isinstance(value, (int, float)) and 1000 * batch / (high + 1e-3) <= value
                <= 1000 * batch / (low - 1e-3)), (
            f"{described}: after {warmup} warm-up calls, the {reps} timed calls at batch {batch} "
            f"took {sorted(timed[batch])} ms (on a clock the grader controls); the throughput "
            f"is {batch} samples / the median in seconds, between {1000 * batch / high:.6g} and "
            f"{1000 * batch / low:.6g} samples/s whichever median definition, got {value!r}"
        )
    wrong = _in_inference_mode(calls)
    assert not wrong, f"{described} ran the model {wrong}: measure in inference mode"
    assert training_after, "the model was in train mode: throughput must restore it"
    batch_sizes = rng.sample([1, 2, 3, 5], 2)
    _, (after, *_) = student.call_inspect("throughput", probe("CallCounter"), sample_shape,
                                          batch_sizes)
    calls = int(after.state_dict["calls"])
    assert calls == 2 * (3 + 9), (
        f"throughput(model, {sample_shape}, {batch_sizes}) with the default warmup=3, reps=9 "
        f"should call the model 2 x (3 + 9) = 24 times, it called it {calls} times"
    )
