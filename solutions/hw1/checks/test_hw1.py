"""Hidden checks for homework 1: measures of effectiveness.

Convention (stated once in the notebook and used by every check): MAC = multiply-accumulates of
Conv2d and Linear layers only, FLOP = 2 x MAC, bias excluded, one forward of the whole input
(batch included). It is the convention of torch.utils.flop_counter.FlopCounterMode, which every
MAC check below uses as a second oracle on a real layer built in the grader's process.

Every input is drawn per run from the `rng` / `torch_rng` fixtures, so that answers differ from
the notebook's and the public checks' fixed cases.
"""

from __future__ import annotations

import inspect
import math
import random

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import nncourse
from grader.checks import kit_model, layer, probe, seq

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


def _oracles_agree(agree: bool, what: str) -> None:
    """Two of the grader's own oracles disagree: a grader bug, reported as an error (not as the
    student's failure)."""
    if not agree:
        raise RuntimeError(f"grader oracles disagree: {what}")


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
    _oracles_agree(2 * expected == _counted_flops(conv, x), f"FlopCounterMode on {cfg}")
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
        _oracles_agree(sum(p.numel() for p in local.parameters()) == expected, f"{local}")
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
        _oracles_agree(2 * expected == flops_counted, f"FlopCounterMode on Linear {shape}")
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
        _oracles_agree(tuple(real.shape[-2:]) == expected, f"nn.Conv2d output on {h}x{w}")
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
        _oracles_agree(2 * sum(expected.values()) == oracle, f"FlopCounterMode on {channels}")
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
        _oracles_agree(math.isclose(by_macs, expected, rel_tol=1e-12), "separable ratio")
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
        _oracles_agree(2 * expected == _counted_flops(conv, x), f"FlopCounterMode on {conv}")
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
    _oracles_agree(2 * correct == _counted_flops(conv, x), f"FlopCounterMode on {conv}")
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
