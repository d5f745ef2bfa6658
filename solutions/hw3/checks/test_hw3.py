"""Hidden checks for homework 3: tensor methods.

Conventions (stated in the notebook): a conv kernel has shape (C_out, C_in, k_h, k_w); the
mode-n unfolding moves mode n to the front and reshapes row-major (tensorly's convention);
"energy" is the sum of squared singular values; MAC = multiply-accumulates of Conv2d and Linear
layers only, bias excluded; parameters count weights and biases.

Every input is drawn per run from the `rng` / `torch_rng` fixtures: matrices with a prescribed
spectrum, tensors of a prescribed multilinear or CP rank, random layers, and a grader-chosen
energy threshold for the shipped CNN. Exact quantities (ranks, layer configurations, parameter
and MAC counts) are compared exactly with oracles written here; decompositions are compared with
the grader's own truncated SVD / HOSVD, which are unique for the spectra drawn; accuracies are
measured here, on the kit's 300 test images, from the weights the student's functions return;
the challenge (section 9) on 150 held-out digits that neither the kit nor the kernel holds.
CP-ALS has no closed form and one random start guarantees nothing, so the exact-rank CP checks
draw only kernels on which the grader's own run of the notebook's parafac call (tensorly, the
same arguments) recovers the kernel; the CP reconstruction itself is one einsum.

Tensor trains (section 8): TT cores are compared through the tensor or matrix they rebuild
(tensorly's tt_to_tensor / tt_matrix_to_matrix), never core by core (an SVD fixes them only up
to signs and rotations); the TT-SVD's ranks against a numpy TT-SVD written here, on tensors of
exact TT rank and on noisy tensors where every truncation is clear; the TT layer's cost against
the notebook's formulas and FlopCounterMode.
"""

from __future__ import annotations

import copy
import math
import random
from pathlib import Path

import numpy as np
import pytest
import tensorly as tl
import torch
import torch.nn.functional as F
from tensorly.decomposition import parafac, tensor_train_matrix
from tensorly.tt_matrix import tt_matrix_to_matrix
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import nncourse
from grader.checks import (
    GraderBug,
    ModuleSpec,
    StudentError,
    accuracy_on_test_split,
    changed_state,
    demanded,
    heldout_accuracy,
    kit_model,
    layer,
    once,
    one_thread,
    oracles_agree,
    pair,
    pretrained_state,
    refuses,
    returned_module,
)
from grader.records import ChallengeResult

PRETRAINED = "cnn_32_64_128"
CHANNELS = (32, 64, 128)

# Accuracies below are on the kit's 300 test images (accuracy_on_test_split), measured with
# torch 2.13 CPU on one thread. Before fine-tuning, Tucker-2 of conv2 and conv3 at energy tau
# (HOSVD) is deterministic; the reference reaches 0.9100 at tau = 0.8 (3.99x fewer MACs) and
# 0.9533 at tau = 0.85 (2.94x).
ACCURACY_BEFORE_FINETUNE = {0.8: 0.87, 0.85: 0.93}
MIN_MAC_REDUCTION = 2.5  # the asked factor for tau <= 0.85 (reference: 2.94x and 3.99x)
# After 3 epochs (Adam 1e-3, one-cycle) at tau = 0.8: the reference reaches 0.9833-0.9933 over
# shuffling seeds 0-9 (mean 0.9903).
ACCURACY_AFTER_FINETUNE = 0.97
# CP-16 of conv3 with 100 ALS iterations, no fine-tuning: reference 0.9833-0.9867 (seeds 0-2).
ACCURACY_CP_CONV3 = 0.95
# The checks whose draw runs ALS or training demand, on a draw where the student's model
# falls short, no more than the grader's own run of the recipe reaches there, less this
# (grader.checks.demanded): the thresholds above were measured on one machine, and ALS and
# training take other float paths on other CPUs.
REFERENCE_MARGIN = 0.01

# ------------------------------------------------------------------------------------------
# Oracles, written independently of the reference notebook.


def _orthonormal(n: int, r: int, gen: torch.Generator) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(n, r, generator=gen, dtype=torch.float64))[0]


def _spectrum(rng: random.Random, k: int, decay: float) -> list[float]:
    """k distinct singular values, decreasing, with relative gaps of at least 2%."""
    values, s = [], rng.uniform(2.0, 10.0)
    for _ in range(k):
        values.append(s)
        s *= rng.uniform(decay, 0.98)
    return values


def _with_spectrum(s: list[float], rows: int, cols: int, gen: torch.Generator) -> torch.Tensor:
    k = len(s)
    return _orthonormal(rows, k, gen) @ torch.diag(torch.tensor(s, dtype=torch.float64)) @ (
        _orthonormal(cols, k, gen).T)


def _energy_rank(s: list[float] | torch.Tensor, tau: float) -> int:
    energy = torch.as_tensor(s, dtype=torch.float64) ** 2
    shares = torch.cumsum(energy, 0) / energy.sum()
    # never more than the full rank: tau = 1 may miss the last share by rounding
    return next((i + 1 for i, share in enumerate(shares.tolist()) if share >= tau), len(shares))


def _shares(s: torch.Tensor) -> list[float]:
    energy = s.double() ** 2
    return (torch.cumsum(energy, 0) / energy.sum()).tolist()


def _unfold(t: torch.Tensor, mode: int) -> torch.Tensor:
    """Mode `mode` to the front, the other modes in order, row-major (tensorly's convention)."""
    return t.permute(mode, *[m for m in range(t.dim()) if m != mode]).reshape(t.shape[mode], -1)


def _leading(m: torch.Tensor, r: int) -> torch.Tensor:
    return torch.linalg.svd(m, full_matrices=False)[0][:, :r]


def _tucker_to_tensor(core, u_out, u_in) -> torch.Tensor:
    return torch.einsum("rskl,or,is->oikl", core, u_out, u_in)


def _project(w: torch.Tensor, u_out: torch.Tensor, u_in: torch.Tensor) -> torch.Tensor:
    """The best kernel with these (orthonormal) factors: W x_0 U_out U_out^T x_1 U_in U_in^T."""
    return torch.einsum("oikl,or,pr,is,js->pjkl", w, u_out, u_out, u_in, u_in)


def _hosvd_recon(w: torch.Tensor, r_out: int, r_in: int) -> torch.Tensor:
    return _project(w, _leading(_unfold(w, 0), r_out), _leading(_unfold(w, 1), r_in))


def _hooi_path(w: torch.Tensor, r_out: int, r_in: int, sweeps: int, rel_gap: float
               ) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """(U_out, U_in) after 0, 1, ..., `sweeps` sweeps of the docstring's recipe (HOSVD, then
    U_out for U_in, then U_in for that U_out), or None when a truncation on the way is not
    clear (_clear_truncation): there the subspace a correct SVD returns is decided by rounding."""
    if not _clear_truncation(w, {0: r_out, 1: r_in}, rel_gap):
        return None
    u_out, u_in = _leading(_unfold(w, 0), r_out), _leading(_unfold(w, 1), r_in)
    path = [(u_out, u_in)]
    for _ in range(sweeps):
        projected = torch.einsum("oikl,is->oskl", w, u_in)
        if not _clear_truncation(projected, {0: r_out}, rel_gap):
            return None
        u_out = _leading(_unfold(projected, 0), r_out)
        projected = torch.einsum("oikl,or->rikl", w, u_out)
        if not _clear_truncation(projected, {1: r_in}, rel_gap):
            return None
        u_in = _leading(_unfold(projected, 1), r_in)
        path.append((u_out, u_in))
    return path


def _subspace_gap(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> float:
    """The largest entry of U U^T - V V^T over pairs of orthonormal bases: 0 for the same
    subspaces, whatever the signs or rotation of the columns."""
    return max((u.double() @ u.double().T - v.double() @ v.double().T).abs().max().item()
               for u, v in zip(a, b, strict=True))


def _clear_truncation(w: torch.Tensor, ranks: dict[int, int], rel_gap: float) -> bool:
    """Whether truncating unfold(w, mode) at rank r leaves a unique leading subspace with room
    to spare, for each {mode: r}: s_r - s_(r+1) >= rel_gap * s_r. Random kernels now and then
    have two nearly equal singular values at the cut; which of their directions a correct SVD
    returns is then decided by float rounding (float32 in the kernel), and no check can demand
    the grader's choice. Draws are repeated until the cut is clear."""
    for mode, r in ranks.items():
        s = torch.linalg.svdvals(_unfold(w.double(), mode))
        if r < len(s) and float(s[r - 1] - s[r]) < rel_gap * float(s[r - 1]):
            return False
    return True


def _hooi_gain(w: torch.Tensor, r_out: int, r_in: int, rel_gap: float
               ) -> tuple[float, float] | None:
    """(HOSVD error, error after the grader's 10 HOOI iterations) when the draw can be judged:
    HOSVD's subspaces (HOOI's start) are unique (_clear_truncation) and HOOI gains at least
    1e-3 over HOSVD; None otherwise (the draw is repeated)."""
    if not _clear_truncation(w, {0: r_out, 1: r_in}, rel_gap):
        return None
    e_hosvd = _rel_err(w, _hosvd_recon(w, r_out, r_in))
    e_hooi = _rel_err(w, _project(w, *_hooi_path(w, r_out, r_in, 10, 0.0)[-1]))
    return (e_hosvd, e_hooi) if e_hooi < e_hosvd - 1e-3 else None


def _rel_err(w: torch.Tensor, approx: torch.Tensor) -> float:
    return float((w.double() - approx.double()).norm() / w.double().norm())


def _cp_to_tensor(factors: list[torch.Tensor]) -> torch.Tensor:
    return torch.einsum("or,ir,hr,wr->oihw", *factors)


def _exact_cp(shape, rank: int, gen: torch.Generator) -> torch.Tensor:
    """A kernel of CP rank `rank`: unit-norm factor columns, weights in [0.5, 1.5]."""
    factors = [torch.randn(n, rank, generator=gen) for n in shape]
    factors = [f / f.norm(dim=0) for f in factors]
    factors[0] = factors[0] * (0.5 + torch.rand(rank, generator=gen))
    return _cp_to_tensor(factors)


# The notebook's CP contract (cp_decompose / cp_conv): tensorly's parafac with init="random",
# the given random_state and n_iter_max (defaults 0 and 300), tol=1e-8.
CP_DEFAULT_RANDOM_STATE = 0
CP_DEFAULT_N_ITER_MAX = 300


def _parafac(w: torch.Tensor, rank: int, random_state: int, n_iter_max: int
             ) -> list[torch.Tensor]:
    """The notebook's call of parafac, run here: [A_out (weights absorbed), A_in, A_h, A_w]."""
    with one_thread(), tl.backend_context("pytorch"):
        weights, factors = parafac(w.detach(), rank, n_iter_max=n_iter_max, init="random",
                                   random_state=random_state, tol=1e-8)
    return [factors[0] * weights, *factors[1:]]


def _parafac_error(w: torch.Tensor, rank: int, random_state: int, n_iter_max: int) -> float:
    """Relative error that the notebook's call of parafac reaches on w."""
    return _rel_err(w, _cp_to_tensor(_parafac(w, rank, random_state, n_iter_max)))


def _parafac_errors(w: torch.Tensor, rank: int, random_state: int, n_iter_max: int,
                    gen: torch.Generator) -> tuple[float, float] | None:
    """Relative errors the notebook's parafac call reaches on w and on w perturbed by a few
    float32 ulps (what rounding in another kernel could change), or None when either call
    raises: now and then an ALS step meets a singular system (more often when the rank exceeds
    what the other modes can span, e.g. a 1x1 kernel with few input channels), and the
    student's call, the same call, would raise too."""
    perturbed = w * (1 + 1e-6 * torch.randn(w.shape, generator=gen))
    try:
        return (_parafac_error(w, rank, random_state, n_iter_max),
                _parafac_error(perturbed, rank, random_state, n_iter_max))
    except torch.linalg.LinAlgError:
        return None


def _als_recovers(w: torch.Tensor, rank: int, random_state: int, n_iter_max: int,
                  gen: torch.Generator) -> bool:
    """Whether one random start of CP-ALS, called as the notebook's contract says, rebuilds the
    exact-rank kernel w (relative error < 1e-4), and still does on w perturbed by a few float32
    ulps. One random start guarantees nothing: on about 2 % of exact-rank kernels it stops in a
    local minimum or a swamp (errors of 0.2-0.35), on some the outcome flips with float
    rounding, and now and then parafac raises (_parafac_errors). A check may only demand
    recovery on a draw where the grader's own run of the same call recovers, robustly; the draw
    is repeated otherwise."""
    errors = _parafac_errors(w, rank, random_state, n_iter_max, gen)
    return errors is not None and max(errors) < 1e-4


def _params(state: dict) -> int:
    return sum(v.numel() for v in state.values() if isinstance(v, torch.Tensor)
               and v.is_floating_point())


def _macs(model: nn.Module, shape=(1, 1, 8, 8)) -> int:
    """Conv2d and Linear MACs of one forward: output elements x (C_in / groups) x k_h x k_w."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += output.numel() * (module.in_channels // module.groups) * kh * kw
        else:
            total += output.numel() * module.in_features

    _forward_with_hooks(model, [(m, hook) for m in model.modules()
                                if isinstance(m, nn.Conv2d | nn.Linear)], shape)
    return total


def _forward_with_hooks(model: nn.Module, hooks: list, shape=(1, 1, 8, 8)) -> None:
    """One eval-mode forward of zeros of ``shape`` with the forward hooks ``hooks`` ((module,
    hook) pairs) attached, and removed after; layers that do not fit together fail the check."""
    handles = [module.register_forward_hook(hook) for module, hook in hooks]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(shape))
    except RuntimeError as error:  # the returned layers do not fit together
        raise AssertionError(f"the returned model fails on a {shape} input: "
                             f"{str(error)[:300]}") from None
    finally:
        for handle in handles:
            handle.remove()


def _draw_conv(rng: random.Random, gen: torch.Generator, stride=None, bias=None, dilation=1,
               dtype=torch.float32) -> tuple[dict, dict[str, torch.Tensor]]:
    """Conv2d keyword arguments and weights (a random kernel: distinct singular values)."""
    c_in, c_out = rng.randint(3, 16), rng.randint(3, 20)
    k = rng.choice([1, 3, 3, 5, (3, 1), (1, 3), (3, 5)])
    stride = rng.choice([1, 2, (2, 1), (1, 2)]) if stride is None else stride
    kh, kw = pair(k)
    padding = (rng.randint(0, kh // 2), rng.randint(0, kw // 2))
    bias = rng.random() < 0.5 if bias is None else bias
    kwargs = dict(in_channels=c_in, out_channels=c_out, kernel_size=k, stride=stride,
                  padding=padding, bias=bias)
    if dilation != 1:
        kwargs["dilation"] = dilation
    state = {"weight": torch.randn(c_out, c_in, kh, kw, generator=gen, dtype=dtype) * 0.3}
    if bias:
        state["bias"] = torch.randn(c_out, generator=gen, dtype=dtype)
    return kwargs, state


def _conv_spec(kwargs: dict, state: dict) -> ModuleSpec:
    args = (kwargs["in_channels"], kwargs["out_channels"], kwargs["kernel_size"])
    rest = {k: v for k, v in kwargs.items() if k not in ("in_channels", "out_channels",
                                                          "kernel_size")}
    return layer("Conv2d", *args, state_dict=state, **rest)


def _describe(kwargs: dict) -> str:
    return "nn.Conv2d(" + ", ".join(f"{k}={v}" for k, v in kwargs.items()) + ")"


def _conv_configs(returned, what: str) -> list[dict]:
    leaves = returned_module(returned, what).leaves()
    types = [info.type for info in leaves]
    assert all(t == "Conv2d" for t in types), f"{what} should hold only Conv2d layers, got {types}"
    return [dict(info.config) for info in leaves]


def _mismatch(want: dict, have: dict) -> dict:
    return {key: have.get(key) for key, value in want.items() if have.get(key) != value}


def _rebuilt_forward(returned, x: torch.Tensor, what: str) -> torch.Tensor:
    module = returned_module(returned, what).rebuild().eval()
    try:
        with torch.no_grad():
            return module(x)
    except RuntimeError as error:  # the student's layers do not fit together
        raise AssertionError(f"{what} fails on an input of shape {tuple(x.shape)}: "
                             f"{str(error)[:300]}") from None


def _same(got, expected) -> bool:
    """got == expected for a student's value of any type: a comparison that cannot be decided
    (a tensor of several values against a number, inside a tuple or not) is no match, never
    an error of the grader."""
    try:
        return bool(got == expected)
    except (RuntimeError, TypeError, ValueError):
        return False


def _tensor(value, what: str) -> torch.Tensor:
    assert isinstance(value, torch.Tensor), f"{what} should be a tensor, got " \
                                            f"{type(value).__name__}"
    return value


# ------------------------------------------------------------------------------------------
# 1. Truncated SVD of a Linear layer


def _draw_linear(rng: random.Random, gen: torch.Generator, bias: bool | None = None):
    """(in, out, rank, bias, weight with a prescribed spectrum, bias tensor or None, spectrum)."""
    i, o = rng.randint(6, 40), rng.randint(6, 40)
    k = min(i, o)
    s = _spectrum(rng, k, decay=0.6)
    rank = rng.randint(1, k - 1)
    bias = rng.random() < 0.6 if bias is None else bias
    w = _with_spectrum(s, o, i, gen).float()
    b = torch.randn(o, generator=gen) if bias else None
    return i, o, rank, bias, w, b, s


def _linear_spec(i, o, bias, w, b) -> ModuleSpec:
    state = {"weight": w} if b is None else {"weight": w, "bias": b}
    return layer("Linear", i, o, state_dict=state, bias=bias)


@pytest.mark.points(2)
def test_svd_linear_structure(student, rng, torch_rng):
    """Linear(in, r, no bias) then Linear(r, out, bias as the original): r(in + out) + out;
    a layer with a bias and one without on every draw."""
    for bias in (True, False, None, None):
        i, o, rank, bias, w, b, _ = _draw_linear(rng, torch_rng, bias)
        got = student.call("svd_linear", _linear_spec(i, o, bias, w, b), rank)
        what = f"svd_linear(nn.Linear({i}, {o}, bias={bias}), {rank})"
        leaves = returned_module(got, what).leaves()
        types = [info.type for info in leaves]
        assert types == ["Linear", "Linear"], f"{what} should hold two Linear layers, got {types}"
        first, second = (dict(info.config) for info in leaves)
        for name, want, have in [
            ("first", dict(in_features=i, out_features=rank, bias=False), first),
            ("second", dict(in_features=rank, out_features=o, bias=bias), second),
        ]:
            assert not _mismatch(want, have), (
                f"{what}: the {name} Linear should have {want}, got {_mismatch(want, have)}"
            )
        expected = rank * (i + o) + o * bias
        assert _params(got.state_dict) == expected, (
            f"{what} should have r(in + out){' + out' if bias else ''} = {expected} "
            f"parameters, got {_params(got.state_dict)}"
        )


@pytest.mark.points(3)
def test_svd_linear_is_the_truncated_svd(student, rng, torch_rng):
    """W2 @ W1 = U_r S_r V_r^T (Eckart-Young: error = norm of the dropped singular values), the
    second weight U_r has orthonormal columns, the bias is kept, outputs = F.linear(x, W_r, b)."""
    for _ in range(4):
        i, o, rank, bias, w, b, s = _draw_linear(rng, torch_rng)
        what = (f"svd_linear(nn.Linear({i}, {o}) with singular values "
                f"{[round(v, 3) for v in s]}, {rank})")
        got = student.call("svd_linear", _linear_spec(i, o, bias, w, b), rank)
        state = returned_module(got, what).state_dict
        keys = sorted(k for k in state if k.endswith("weight"))
        assert len(keys) == 2, f"{what} should hold two weight matrices, got {keys}"
        w1, w2 = state[keys[0]].double(), state[keys[1]].double()
        assert w1.shape == (rank, i) and w2.shape == (o, rank), (
            f"{what}: weights should be {(rank, i)} and {(o, rank)}, got {tuple(w1.shape)} and "
            f"{tuple(w2.shape)}"
        )
        u, sv, vh = torch.linalg.svd(w.double(), full_matrices=False)
        best = u[:, :rank] @ torch.diag(sv[:rank]) @ vh[:rank]
        dropped = math.sqrt(sum(v * v for v in sv[rank:].tolist()))
        oracles_agree(math.isclose(float((w.double() - best).norm()), dropped, rel_tol=1e-6),
                       "Eckart-Young on the oracle's own SVD")
        error = float((w.double() - w2 @ w1).norm())
        assert math.isclose(error, dropped, rel_tol=1e-3, abs_tol=1e-4), (
            f"{what}: ||W - W2 W1||_F should equal the Eckart-Young optimum "
            f"sqrt(sum of the dropped s_i^2) = {dropped:.5f}, got {error:.5f}"
        )
        assert torch.allclose(w2 @ w1, best, atol=1e-4), (
            f"{what}: the product of the two weights should be U_r S_r V_r^T"
        )
        gap = float((w2.T @ w2 - torch.eye(rank, dtype=torch.float64)).abs().max())
        assert gap < 1e-4, (
            f"{what}: the second weight should be U_r, with orthonormal columns (S_r goes to the "
            f"first layer); its max |U^T U - I| is {gap:.3g}"
        )
        # the forward against the returned product, which equals U_r S_r V_r^T within 1e-4 per
        # entry (above): against the oracle's, an output would add up in entries of that
        # error, one per input (1.7e-4 on a correct float32 SVD at seed 2462)
        x = torch.randn(5, i, generator=torch_rng)
        out = _rebuilt_forward(got, x, what)
        expected = F.linear(x, (w2 @ w1).float(), b)
        assert torch.allclose(out, expected, atol=1e-4), (
            f"{what}: outputs should equal F.linear(x, W2 W1, b) = F.linear(x, U_r S_r V_r^T, b)"
            + ("" if b is None else " with the original bias")
            + f"; max difference {float((out - expected).abs().max()):.3g}"
        )


@pytest.mark.points(3)
def test_svd_rank_for_energy(student, rng, torch_rng):
    """Smallest r with sum_{i<=r} s_i^2 / sum s_i^2 >= tau, on matrices of prescribed spectrum;
    tau = 1 gives min(W.shape)."""
    cases = 0
    while cases < 8:
        rows, cols = rng.randint(5, 30), rng.randint(5, 30)
        s = _spectrum(rng, min(rows, cols), decay=rng.choice([0.5, 0.7, 0.85]))
        tau = round(rng.uniform(0.3, 0.995), 4)
        shares = _shares(torch.tensor(s))
        if min(abs(share - tau) for share in shares) < 1e-3:
            continue  # a threshold right on a share would test rounding, not the rule
        cases += 1
        expected = _energy_rank(s, tau)
        w = _with_spectrum(s, rows, cols, torch_rng).float()
        got = student.call("svd_rank_for_energy", w, tau)
        assert _same(got, expected), (
            f"svd_rank_for_energy on a {rows}x{cols} matrix with singular values "
            f"{[round(v, 4) for v in s]} and tau={tau}: the smallest r keeping a share >= tau of "
            f"sum s_i^2 is {expected}, got {got}"
        )
    # tau = 1 keeps every singular value, and never more than min(W.shape), although the last
    # cumulative share may fall an ulp short of 1; drawn where the smallest singular value
    # holds >= 1e-4 of the energy, so that no smaller rank comes near 1
    while True:
        rows, cols = rng.randint(5, 14), rng.randint(5, 14)
        s = _spectrum(rng, min(rows, cols), decay=0.85)
        if s[-1] ** 2 >= 1e-4 * sum(v * v for v in s):
            break
    w = _with_spectrum(s, rows, cols, torch_rng).float()
    got = student.call("svd_rank_for_energy", w, 1.0)
    assert _same(got, min(rows, cols)), (
        f"svd_rank_for_energy on a {rows}x{cols} matrix with singular values "
        f"{[round(v, 4) for v in s]} and tau=1.0 should keep all {min(rows, cols)} (never more "
        f"than min(W.shape), whatever the rounding of the last share), got {got}"
    )


# ------------------------------------------------------------------------------------------
# 2. Unfoldings, HOSVD, HOOI


@pytest.mark.points(2)
def test_unfold(student, rng, torch_rng):
    """Mode n to the front, the other modes in order, row-major reshape (tensorly's layout)."""
    for _ in range(3):
        shape = tuple(rng.randint(2, 6) for _ in range(rng.choice([3, 4, 4])))
        t = torch.randn(shape, generator=torch_rng)
        for mode in range(len(shape)):
            expected = _unfold(t, mode)
            # the definition entry by entry: column index of the other modes, last fastest
            index = tuple(rng.randrange(n) for n in shape)
            others = [m for m in range(len(shape)) if m != mode]
            column = 0
            for m in others:
                column = column * shape[m] + index[m]
            oracles_agree(bool(expected[index[mode], column] == t[index]), "unfold by index")
            got = student.call("unfold", t, mode)
            assert isinstance(got, torch.Tensor) and got.shape == expected.shape, (
                f"unfold of a tensor of shape {shape} along mode {mode} should have shape "
                f"{tuple(expected.shape)}, got {getattr(got, 'shape', got)}"
            )
            assert torch.equal(got, expected), (
                f"unfold(T, {mode}) for T of shape {shape}: row i should be T with mode {mode} "
                f"fixed to i, the other modes in order with the last varying fastest"
            )


def _exact_tucker(rng: random.Random, gen: torch.Generator):
    """A kernel of multilinear rank exactly (r_out, r_in) in the channel modes."""
    c_out, c_in, k = rng.randint(5, 16), rng.randint(4, 12), rng.choice([3, 3, 5])
    r_out = rng.randint(1, c_out - 1)
    r_in = rng.randint(max(1, -(-r_out // (k * k))), min(c_in - 1, r_out * k * k))
    core = torch.randn(r_out, r_in, k, k, generator=gen, dtype=torch.float64)
    w = _tucker_to_tensor(core, torch.randn(c_out, r_out, generator=gen, dtype=torch.float64),
                          torch.randn(c_in, r_in, generator=gen, dtype=torch.float64))
    return w, r_out, r_in


def _check_factors(got, w, r_out, r_in, what) -> tuple[torch.Tensor, ...]:
    assert isinstance(got, tuple | list) and len(got) == 3, (
        f"{what} should return (core, U_out, U_in), got {type(got).__name__}"
    )
    core, u_out, u_in = (_tensor(t, f"{what}: {name}").double()
                         for t, name in zip(got, ("core", "U_out", "U_in"), strict=True))
    c_out, c_in, kh, kw = w.shape
    for name, t, shape in [("core", core, (r_out, r_in, kh, kw)), ("U_out", u_out, (c_out, r_out)),
                           ("U_in", u_in, (c_in, r_in))]:
        assert tuple(t.shape) == shape, f"{what}: {name} should have shape {shape}, got " \
                                        f"{tuple(t.shape)}"
    for name, u in [("U_out", u_out), ("U_in", u_in)]:
        gap = float((u.T @ u - torch.eye(u.shape[1], dtype=torch.float64)).abs().max())
        assert gap < 1e-5, f"{what}: {name} should have orthonormal columns, max |U^T U - I| = " \
                           f"{gap:.3g}"
    return core, u_out, u_in


@pytest.mark.points(2)
def test_hosvd_exact_multilinear_rank(student, rng, torch_rng):
    """A kernel of multilinear rank (r_out, r_in) is recovered at those ranks (error < 1e-5)."""
    for _ in range(3):
        w, r_out, r_in = _exact_tucker(rng, torch_rng)
        what = f"hosvd_tucker2 on a {tuple(w.shape)} kernel of multilinear rank " \
               f"({r_out}, {r_in}, ...) at ranks ({r_out}, {r_in})"
        got = student.call("hosvd_tucker2", w, r_out, r_in)
        core, u_out, u_in = _check_factors(got, w, r_out, r_in, what)
        error = _rel_err(w, _tucker_to_tensor(core, u_out, u_in))
        assert error < 1e-5, f"{what}: the reconstruction should be exact, relative error " \
                             f"{error:.3g}"


@pytest.mark.points(2)
def test_hosvd_truncation(student, rng, torch_rng):
    """On random kernels: U_out, U_in span the leading left singular subspaces of the mode-0 and
    mode-1 unfoldings (the reconstruction equals the grader's HOSVD), core = W x U_out^T x U_in^T,
    and the error does not grow with the ranks."""
    for _ in range(3):
        while True:  # both cuts (ranks and ranks + 2) unique: _clear_truncation
            c_out, c_in, k = rng.randint(6, 16), rng.randint(5, 12), rng.choice([1, 3, 3])
            w = torch.randn(c_out, c_in, k, k, generator=torch_rng, dtype=torch.float64)
            r_out = rng.randint(1, min(c_out, c_in * k * k) - 3)
            r_in = rng.randint(1, min(c_in, c_out * k * k) - 3)
            if all(_clear_truncation(w, {0: r_out + step, 1: r_in + step}, 1e-4)
                   for step in (0, 2)):
                break
        errors = []
        for step in (0, 2):
            ranks = (r_out + step, r_in + step)
            what = f"hosvd_tucker2 on a random {tuple(w.shape)} kernel at ranks {ranks}"
            got = student.call("hosvd_tucker2", w, *ranks)
            core, u_out, u_in = _check_factors(got, w, *ranks, what)
            own = torch.einsum("oikl,or,is->rskl", w, u_out, u_in)
            assert torch.allclose(core, own, atol=1e-6), (
                f"{what}: the core should be W x_0 U_out^T x_1 U_in^T"
            )
            recon = _tucker_to_tensor(core, u_out, u_in)
            expected = _hosvd_recon(w, *ranks)
            assert torch.allclose(recon, expected, atol=1e-6), (
                f"{what}: U_out and U_in should be the leading left singular vectors of "
                f"unfold(W, 0) and unfold(W, 1); relative error {_rel_err(w, recon):.5f}, "
                f"HOSVD gives {_rel_err(w, expected):.5f}"
            )
            errors.append(_rel_err(w, recon))
        assert errors[1] < errors[0], f"higher ranks should give a smaller error, got {errors}"


@pytest.mark.points(2)
def test_hooi_improves_on_hosvd(student, rng, torch_rng):
    """HOOI (10 iterations) from HOSVD: orthonormal factors, the optimal core for them, and at
    least half of the improvement the grader's own HOOI finds over HOSVD."""
    for _ in range(2):
        gain = None
        while gain is None:  # a draw on which HOOI's start is unique and HOOI gains: _hooi_gain
            c_out, c_in = rng.randint(10, 16), rng.randint(8, 12)
            w = torch.randn(c_out, c_in, 3, 3, generator=torch_rng, dtype=torch.float64)
            r_out, r_in = rng.randint(2, c_out // 2), rng.randint(2, c_in // 2)
            gain = _hooi_gain(w, r_out, r_in, 1e-4)
        e_hosvd, e_hooi = gain
        what = f"hooi_tucker2 on a random {tuple(w.shape)} kernel at ranks ({r_out}, {r_in})"
        got = student.call("hooi_tucker2", w, r_out, r_in, n_iter=10)
        core, u_out, u_in = _check_factors(got, w, r_out, r_in, what)
        recon = _tucker_to_tensor(core, u_out, u_in)
        assert torch.allclose(recon, _project(w, u_out, u_in), atol=1e-6), (
            f"{what}: the core should be W x_0 U_out^T x_1 U_in^T for the returned factors"
        )
        error = _rel_err(w, recon)
        assert error <= e_hosvd - 0.5 * (e_hosvd - e_hooi), (
            f"{what}: relative error {error:.5f}; HOSVD gives {e_hosvd:.5f} and 10 HOOI "
            f"iterations reach {e_hooi:.5f}: alternate the updates of U_out and U_in"
        )
        # every sweep ends by updating U_in for the U_out it just found: the returned U_in spans
        # the leading subspace of unfold(W x_0 U_out^T, 1) (judged where that cut is clear)
        projected = torch.einsum("oikl,or->rikl", w, u_out.double())
        if _clear_truncation(projected, {1: r_in}, 1e-4):
            best = _leading(_unfold(projected, 1), r_in)
            u = u_in.double()
            assert torch.allclose(u @ u.T, best @ best.T, atol=1e-5), (
                f"{what}: U_in should be the leading left singular vectors of unfold(W x_0 "
                f"U_out^T, 1) for the returned U_out: each of the n_iter sweeps updates U_out, "
                f"then U_in for that U_out"
            )


@pytest.mark.points(1)
def test_hooi_runs_n_iter_sweeps(student, rng, torch_rng):
    """n_iter is part of the contract ("then n_iter times update U_out, then U_in"): at n_iter 1
    and 2 the factors span the subspaces of exactly that many sweeps of the recipe from HOSVD.
    Drawn where every truncation on the way is clear and the sweeps before and after differ by
    at least 0.02 (the tolerance is 1e-3; a float32 or Gram-matrix student is within 3e-5)."""
    for n_iter in (1, 2):
        while True:
            c_out, c_in = rng.randint(10, 16), rng.randint(8, 12)
            w = torch.randn(c_out, c_in, 3, 3, generator=torch_rng, dtype=torch.float64)
            r_out, r_in = rng.randint(2, c_out // 2), rng.randint(2, c_in // 2)
            path = _hooi_path(w, r_out, r_in, n_iter + 1, 1e-3)
            if path is not None and min(_subspace_gap(path[n_iter], path[n_iter + step])
                                        for step in (-1, 1)) >= 0.02:
                break
        what = (f"hooi_tucker2 on a random {tuple(w.shape)} kernel at ranks ({r_out}, {r_in}), "
                f"n_iter={n_iter}")
        got = student.call("hooi_tucker2", w, r_out, r_in, n_iter=n_iter)
        _, u_out, u_in = _check_factors(got, w, r_out, r_in, what)
        gaps = [_subspace_gap((u_out, u_in), factors) for factors in path]
        assert gaps[n_iter] <= 1e-3, (
            f"{what}: U_out and U_in should span the subspaces of exactly {n_iter} sweep(s) "
            f"from HOSVD (each sweep: U_out for the current U_in, then U_in for that U_out); "
            f"they are {gaps[n_iter]:.3g} away from them"
            + "".join(f", {gap:.3g} from {k} sweep(s)" for k, gap in enumerate(gaps)
                      if k != n_iter)
        )


# ------------------------------------------------------------------------------------------
# 3. Tucker-2 convolution


def _tucker_expected_configs(kwargs: dict, r_out: int, r_in: int) -> list[dict]:
    c_in, c_out, bias = kwargs["in_channels"], kwargs["out_channels"], kwargs["bias"]
    one = dict(kernel_size=(1, 1), stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1)
    return [
        dict(in_channels=c_in, out_channels=r_in, bias=False, **one),
        dict(in_channels=r_in, out_channels=r_out, kernel_size=pair(kwargs["kernel_size"]),
             stride=pair(kwargs["stride"]), padding=pair(kwargs["padding"]),
             dilation=pair(kwargs.get("dilation", 1)), groups=1, bias=False),
        dict(in_channels=r_out, out_channels=c_out, bias=bias, **one),
    ]


def _draw_tucker_case(rng, gen, stride=None, bias=None, dilation=1):
    """A random conv and ranks at which its HOSVD is unique: float32 weights, so the cut needs
    a relative gap of 1e-3 (_clear_truncation)."""
    while True:
        kwargs, state = _draw_conv(rng, gen, stride=stride, bias=bias, dilation=dilation)
        kh, kw = pair(kwargs["kernel_size"])
        r_out = rng.randint(1, min(kwargs["out_channels"], kwargs["in_channels"] * kh * kw))
        r_in = rng.randint(1, min(kwargs["in_channels"], kwargs["out_channels"] * kh * kw))
        if _clear_truncation(state["weight"], {0: r_out, 1: r_in}, 1e-3):
            return kwargs, state, r_out, r_in


@pytest.mark.points(3)
def test_tucker2_conv_structure(student, rng, torch_rng):
    """1x1 C_in->R_in (no bias); k x k R_in->R_out with the conv's stride, padding and dilation
    (no bias); 1x1 R_out->C_out with the conv's bias. Parameters C_in R_in + R_in R_out k_h k_w
    + R_out C_out (+ C_out)."""
    for stride, bias, dilation in [(2, True, 1), ((1, 2), False, 1), (None, None, 2),
                                   (None, None, 1)]:
        kwargs, state, r_out, r_in = _draw_tucker_case(rng, torch_rng, stride, bias, dilation)
        what = f"tucker2_conv({_describe(kwargs)}, {r_out}, {r_in})"
        got = student.call("tucker2_conv", _conv_spec(kwargs, state), r_out, r_in)
        configs = _conv_configs(got, what)
        expected = _tucker_expected_configs(kwargs, r_out, r_in)
        assert len(configs) == 3, f"{what} should hold three Conv2d layers, got {len(configs)}"
        for name, want, have in zip(("first (1x1)", "middle (k x k)", "last (1x1)"), expected,
                                    configs, strict=True):
            wrong = _mismatch(want, have)
            assert not wrong, f"{what}: the {name} conv should have {want}; these differ: {wrong}"
        kh, kw = pair(kwargs["kernel_size"])
        c_in, c_out = kwargs["in_channels"], kwargs["out_channels"]
        params = c_in * r_in + r_in * r_out * kh * kw + r_out * c_out + c_out * kwargs["bias"]
        assert _params(got.state_dict) == params, (
            f"{what} should have C_in R_in + R_in R_out k_h k_w + R_out C_out"
            f"{' + C_out' if kwargs['bias'] else ''} = {params} parameters, got "
            f"{_params(got.state_dict)}"
        )


@pytest.mark.points(3)
def test_tucker2_conv_equals_reconstructed_conv(student, rng, torch_rng):
    """The block computes F.conv2d(x, HOSVD reconstruction, bias, stride, padding, dilation),
    stride 2 included."""
    for stride, bias, dilation in [(2, True, 1), (2, False, 1), ((2, 1), True, 1),
                                   (1, True, (2, 1))]:
        kwargs, state, r_out, r_in = _draw_tucker_case(rng, torch_rng, stride, bias, dilation)
        what = f"tucker2_conv({_describe(kwargs)}, {r_out}, {r_in})"
        got = student.call("tucker2_conv", _conv_spec(kwargs, state), r_out, r_in)
        recon = _hosvd_recon(state["weight"].double(), r_out, r_in).float()
        (kh, kw), (dh, dw) = pair(kwargs["kernel_size"]), pair(dilation)
        reach_h, reach_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
        x = torch.randn(2, kwargs["in_channels"], rng.randint(reach_h + 2, reach_h + 8),
                        rng.randint(reach_w + 2, reach_w + 8), generator=torch_rng)
        expected = F.conv2d(x, recon, state.get("bias"), stride=kwargs["stride"],
                            padding=kwargs["padding"], dilation=dilation)
        out = _rebuilt_forward(got, x, what)
        assert out.shape == expected.shape, (
            f"{what} on an input of shape {tuple(x.shape)} should give {tuple(expected.shape)}, "
            f"got {tuple(out.shape)}"
        )
        gap = float((out - expected).abs().max())
        assert gap < 1e-3 * max(1.0, float(expected.abs().max())), (
            f"{what}: outputs should equal the convolution with the HOSVD-reconstructed kernel "
            f"(same stride, padding, dilation and bias); max difference {gap:.3g}"
        )


@pytest.mark.points(1)
def test_tucker2_conv_hooi(student, rng, torch_rng):
    """method="hooi": the block is a Tucker-2 conv at least half-way from HOSVD to HOOI."""
    gain = None
    while gain is None:  # float32 weights: a wider gap at the cut (_hooi_gain)
        c_out, c_in = rng.randint(10, 16), rng.randint(8, 12)
        kwargs = dict(in_channels=c_in, out_channels=c_out, kernel_size=3, stride=1,
                      padding=(1, 1), bias=True)
        state = {"weight": torch.randn(c_out, c_in, 3, 3, generator=torch_rng),
                 "bias": torch.randn(c_out, generator=torch_rng)}
        r_out, r_in = rng.randint(2, c_out // 2), rng.randint(2, c_in // 2)
        w = state["weight"].double()
        gain = _hooi_gain(w, r_out, r_in, 1e-3)
    e_hosvd, e_hooi = gain
    what = f"tucker2_conv({_describe(kwargs)}, {r_out}, {r_in}, method='hooi')"
    got = student.call("tucker2_conv", _conv_spec(kwargs, state), r_out, r_in, method="hooi")
    _conv_configs(got, what)
    keys = sorted(k for k in got.state_dict if k.endswith("weight"))
    assert len(keys) == 3, f"{what} should hold three conv weights, got {keys}"
    first, middle, last = (got.state_dict[k].double() for k in keys)
    try:
        kernel = torch.einsum("rskl,or,si->oikl", middle, last[:, :, 0, 0], first[:, :, 0, 0])
    except (RuntimeError, IndexError) as error:
        raise AssertionError(f"{what}: the three weights do not chain: {error}") from None
    assert kernel.shape == w.shape, (
        f"{what}: the block's kernel has shape {tuple(kernel.shape)}, not {tuple(w.shape)}"
    )
    error = _rel_err(w, kernel)
    assert error <= e_hosvd - 0.5 * (e_hosvd - e_hooi), (
        f"{what}: the block's kernel has relative error {error:.5f}; HOSVD gives {e_hosvd:.5f}, "
        f"HOOI {e_hooi:.5f}"
    )


# ------------------------------------------------------------------------------------------
# 4. CP convolution


@pytest.mark.points(2)
def test_cp_decompose_exact_rank(student, rng, torch_rng):
    """On a kernel of exact CP rank R, parafac's factors rebuild it (relative error < 1e-2),
    on draws where the same parafac call, run by the grader, rebuilds it."""
    for _ in range(2):
        while True:
            shape = (rng.randint(10, 16), rng.randint(6, 10), 3, 3)
            rank = rng.randint(2, 6)
            w = _exact_cp(shape, rank, torch_rng)
            seed = rng.randint(0, 9)
            if _als_recovers(w, rank, seed, CP_DEFAULT_N_ITER_MAX, torch_rng):
                break
        what = f"cp_decompose on a {shape} kernel of CP rank {rank} (random_state={seed})"
        got = student.call("cp_decompose", w, rank, random_state=seed)
        assert isinstance(got, list | tuple) and len(got) == 4, (
            f"{what} should return the four factors [A_out, A_in, A_h, A_w], got {type(got)}"
        )
        factors = [_tensor(f, f"{what}: each factor").float() for f in got]
        shapes = [tuple(f.shape) for f in factors]
        want = [(n, rank) for n in shape]
        assert shapes == want, f"{what}: factor shapes should be {want}, got {shapes}"
        error = _rel_err(w, _cp_to_tensor(factors))
        assert error < 1e-2, (
            f"{what}: cp_to_tensor(factors) should rebuild the kernel (CP weights absorbed into a "
            f"factor); relative error {error:.4f}"
        )


def _cp_expected_configs(kwargs: dict, rank: int) -> list[dict]:
    c_in, c_out, bias = kwargs["in_channels"], kwargs["out_channels"], kwargs["bias"]
    (kh, kw), (sh, sw), (ph, pw) = (pair(kwargs["kernel_size"]), pair(kwargs["stride"]),
                                    pair(kwargs["padding"]))
    dh, dw = pair(kwargs.get("dilation", 1))
    one = dict(kernel_size=(1, 1), stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1)
    return [
        dict(in_channels=c_in, out_channels=rank, bias=False, **one),
        dict(in_channels=rank, out_channels=rank, kernel_size=(kh, 1), stride=(sh, 1),
             padding=(ph, 0), dilation=(dh, 1), groups=rank, bias=False),
        dict(in_channels=rank, out_channels=rank, kernel_size=(1, kw), stride=(1, sw),
             padding=(0, pw), dilation=(1, dw), groups=rank, bias=False),
        dict(in_channels=rank, out_channels=c_out, bias=bias, **one),
    ]


@pytest.mark.points(2)
def test_cp_conv_structure(student, rng, torch_rng):
    """1x1 C_in->R; (k_h,1) and (1,k_w) depth-wise (groups=R) with the stride, padding and
    dilation split by axis; 1x1 R->C_out with the bias. Parameters R(C_in + k_h + k_w + C_out)
    (+ C_out). Drawn where the grader's own run of the same parafac call completes
    (on some small kernels an ALS step is singular and parafac raises)."""
    for stride, bias, dilation in [((2, 1), True, 1), (2, False, 1), (None, None, (1, 2))]:
        while True:
            kwargs, state = _draw_conv(rng, torch_rng, stride=stride, bias=bias,
                                       dilation=dilation)
            rank = rng.randint(2, 6)
            if _parafac_errors(state["weight"], rank, CP_DEFAULT_RANDOM_STATE, 30,
                               torch_rng) is not None:
                break
        what = f"cp_conv({_describe(kwargs)}, {rank})"
        got = student.call("cp_conv", _conv_spec(kwargs, state), rank, n_iter_max=30)
        configs = _conv_configs(got, what)
        assert len(configs) == 4, f"{what} should hold four Conv2d layers, got {len(configs)}"
        names = ("first (1x1)", "vertical (k_h x 1)", "horizontal (1 x k_w)", "last (1x1)")
        for name, want, have in zip(names, _cp_expected_configs(kwargs, rank), configs,
                                    strict=True):
            wrong = _mismatch(want, have)
            assert not wrong, f"{what}: the {name} conv should have {want}; these differ: {wrong}"
        kh, kw = pair(kwargs["kernel_size"])
        c_in, c_out = kwargs["in_channels"], kwargs["out_channels"]
        params = rank * (c_in + kh + kw + c_out) + c_out * kwargs["bias"]
        assert _params(got.state_dict) == params, (
            f"{what} should have R(C_in + k_h + k_w + C_out){' + C_out' if kwargs['bias'] else ''}"
            f" = {params} parameters, got {_params(got.state_dict)}"
        )


@pytest.mark.points(2)
def test_cp_conv_equals_the_original_on_exact_rank(student, rng, torch_rng):
    """On a kernel of exact CP rank R, the four layers compute the original conv (stride 2 and
    bias included) within 1e-2 relative, and exactly the conv with their own CP kernel; on
    draws where the grader's own run of cp_conv's parafac call (default random_state and
    n_iter_max) rebuilds the kernel."""
    for stride in (2, (1, 2)):
        while True:
            kwargs, state = _draw_conv(rng, torch_rng, stride=stride, bias=True)
            kwargs.update(kernel_size=3, padding=(1, 1), in_channels=rng.randint(4, 8),
                          out_channels=rng.randint(8, 14))
            rank = rng.randint(2, 5)
            state["weight"] = _exact_cp((kwargs["out_channels"], kwargs["in_channels"], 3, 3),
                                        rank, torch_rng)
            if _als_recovers(state["weight"], rank, CP_DEFAULT_RANDOM_STATE,
                             CP_DEFAULT_N_ITER_MAX, torch_rng):
                break
        state["bias"] = torch.randn(kwargs["out_channels"], generator=torch_rng) * 0.1
        what = f"cp_conv({_describe(kwargs)}, {rank}) on a kernel of CP rank {rank}"
        got = student.call("cp_conv", _conv_spec(kwargs, state), rank)
        x = torch.randn(2, kwargs["in_channels"], rng.randint(6, 10), rng.randint(6, 10),
                        generator=torch_rng)
        out = _rebuilt_forward(got, x, what)
        expected = F.conv2d(x, state["weight"], state["bias"], stride=kwargs["stride"], padding=1)
        assert out.shape == expected.shape, (
            f"{what} on an input of shape {tuple(x.shape)} should give {tuple(expected.shape)}, "
            f"got {tuple(out.shape)}"
        )
        error = _rel_err(expected, out)
        assert error < 1e-2, f"{what}: outputs should match the original conv, relative error " \
                             f"{error:.4f}"
        keys = sorted(k for k in got.state_dict if k.endswith("weight"))
        assert len(keys) == 4, f"{what} should hold four conv weights, got {keys}"
        w1, wh, ww, w4 = (got.state_dict[k] for k in keys)
        try:
            kernel = _cp_to_tensor([w4[:, :, 0, 0], w1[:, :, 0, 0].T, wh[:, 0, :, 0].T,
                                    ww[:, 0, 0, :].T])
            own = F.conv2d(x, kernel, got.state_dict.get(keys[-1][:-len("weight")] + "bias"),
                           stride=kwargs["stride"], padding=1)
        except (RuntimeError, IndexError) as error:
            raise AssertionError(f"{what}: the four weights do not form a CP kernel: "
                                 f"{str(error)[:300]}") from None
        assert torch.allclose(out, own, atol=1e-4), (
            f"{what}: the four layers should compute the conv with their own CP kernel"
        )


def _cp_count_draw(rng: random.Random, gen: torch.Generator
                   ) -> tuple[torch.Tensor, int, int, int, torch.Tensor]:
    """(kernel, rank, n_iter_max in 1..3, random_state, the kernel the notebook's parafac call
    rebuilds with exactly these arguments), drawn where that result is robust (a few float32
    ulps on the kernel move it < 1e-5) and told apart from one iteration more or fewer and
    from the next random_state (>= 1e-2 apart)."""
    while True:
        w = torch.randn(rng.randint(6, 12), rng.randint(4, 8), 3, 3, generator=gen)
        rank, n_iter, seed = rng.randint(2, 5), rng.randint(1, 3), rng.randint(0, 9)
        perturbed = w * (1 + 1e-6 * torch.randn(w.shape, generator=gen))
        others = [(rank, seed, n_iter + 1), (rank, seed + 1, n_iter)]
        if n_iter > 1:
            others.append((rank, seed, n_iter - 1))
        try:
            expected = _cp_to_tensor(_parafac(w, rank, seed, n_iter))
            robust = _rel_err(expected, _cp_to_tensor(_parafac(perturbed, rank, seed, n_iter)))
            apart = min(_rel_err(expected, _cp_to_tensor(_parafac(w, r, s, n)))
                        for r, s, n in others)
        except torch.linalg.LinAlgError:  # a singular ALS step: the same call raises there
            continue
        if robust < 1e-5 and apart >= 1e-2:
            return w, rank, n_iter, seed, expected


@pytest.mark.points(1)
def test_cp_runs_the_asked_iterations(student, rng, torch_rng):
    """n_iter_max and random_state are the contract's (cp_decompose: tensorly's parafac with
    init="random", the given random_state and n_iter_max, tol=1e-8; cp_conv decomposes with
    cp_decompose): at n_iter_max 1 to 3, the factors of cp_decompose and the kernel of
    cp_conv's four layers rebuild what the grader's own call with those arguments rebuilds
    (relative difference < 1e-3), on draws where that call is robust and one iteration more or
    fewer, or another random_state, lands >= 1e-2 away."""
    w, rank, n_iter, seed, expected = _cp_count_draw(rng, torch_rng)
    what = (f"cp_decompose on a random {tuple(w.shape)} kernel, rank {rank}, n_iter_max={n_iter}, "
            f"random_state={seed}")
    got = student.call("cp_decompose", w, rank, n_iter_max=n_iter, random_state=seed)
    assert isinstance(got, list | tuple) and len(got) == 4, (
        f"{what} should return the four factors [A_out, A_in, A_h, A_w], got {type(got)}"
    )
    try:
        rebuilt = _cp_to_tensor([_tensor(f, f"{what}: each factor").float() for f in got])
    except RuntimeError as error:
        raise AssertionError(f"{what}: the factors do not form a CP kernel: {error}") from None
    gap = _rel_err(expected, rebuilt) if rebuilt.shape == w.shape else float("inf")
    assert gap < 1e-3, (
        f"{what}: the factors should rebuild what parafac(W, {rank}, n_iter_max={n_iter}, "
        f"init='random', random_state={seed}, tol=1e-8) rebuilds (exactly that many ALS "
        f"iterations from that start); relative difference {gap:.3g}"
    )
    w, rank, n_iter, seed, expected = _cp_count_draw(rng, torch_rng)
    c_out, c_in = w.shape[:2]
    spec = layer("Conv2d", c_in, c_out, 3, padding=1, bias=False, state_dict={"weight": w})
    what = (f"cp_conv(nn.Conv2d({c_in}, {c_out}, 3, padding=1) with a random kernel, {rank}, "
            f"n_iter_max={n_iter}, random_state={seed})")
    got = student.call("cp_conv", spec, rank, n_iter_max=n_iter, random_state=seed)
    keys = sorted(k for k in returned_module(got, what).state_dict if k.endswith("weight"))
    assert len(keys) == 4, f"{what} should hold four conv weights, got {keys}"
    w1, wh, ww, w4 = (got.state_dict[k] for k in keys)
    try:
        kernel = _cp_to_tensor([w4[:, :, 0, 0], w1[:, :, 0, 0].T, wh[:, 0, :, 0].T,
                                ww[:, 0, 0, :].T])
    except (RuntimeError, IndexError) as error:
        raise AssertionError(f"{what}: the four weights do not form a CP kernel: "
                             f"{str(error)[:300]}") from None
    gap = _rel_err(expected, kernel) if kernel.shape == w.shape else float("inf")
    assert gap < 1e-3, (
        f"{what}: the four layers' kernel should be what cp_decompose(W, {rank}, "
        f"n_iter_max={n_iter}, random_state={seed}) rebuilds; relative difference {gap:.3g}"
    )


def _reference_cp_conv3(seed: int) -> float:
    """Test accuracy of the shipped CNN with conv3 replaced by the grader's own CP-16 of it
    (the notebook's parafac call, 100 iterations): the conv with the CP kernel."""
    model = nncourse.load_pretrained(PRETRAINED)
    kernel = _cp_to_tensor(_parafac(model.conv3.weight, 16, seed, 100))
    with torch.no_grad():
        model.conv3.weight.copy_(kernel)
    return accuracy_on_test_split(model)


@pytest.mark.slow_check
@pytest.mark.points(2)
def test_cp_conv_on_the_trained_conv3(student, rng):
    """CP-16 of the shipped CNN's conv3 (100 ALS iterations), no fine-tuning: accuracy measured
    here on the test split, >= ACCURACY_CP_CONV3 or what the grader's own CP-16 reaches
    (grader.checks.demanded)."""
    state = pretrained_state(PRETRAINED)
    seed = rng.randint(0, 2)
    spec = layer("Conv2d", CHANNELS[1], CHANNELS[2], 3, padding=1, bias=False,
                 state_dict={"weight": state["conv3.weight"]})
    got = student.with_timeout(60).call("cp_conv", spec, 16, n_iter_max=100, random_state=seed)
    what = f"cp_conv(conv3 of the shipped CNN, 16, n_iter_max=100, random_state={seed})"
    configs = _conv_configs(got, what)
    assert [c.get("groups") for c in configs] == [1, 16, 16, 1], (
        f"{what} should be 1x1, two depth-wise (groups=16) and 1x1 convs, got groups "
        f"{[c.get('groups') for c in configs]}"
    )
    model = nncourse.load_pretrained(PRETRAINED)
    model.conv3 = returned_module(got, what).rebuild()
    accuracy = accuracy_on_test_split(model)
    demand = demanded(accuracy, ACCURACY_CP_CONV3, lambda: _reference_cp_conv3(seed),
                      REFERENCE_MARGIN)
    assert demand.met_by(accuracy), (
        f"the shipped CNN with {what} should keep a test accuracy >= "
        f"{demand.minimum:.4f}{demand.note()} (measured by the grader), got {accuracy:.4f}"
    )


# ------------------------------------------------------------------------------------------
# 5. Rank selection


@pytest.mark.points(2)
def test_tucker2_ranks_by_energy(student, rng, torch_rng):
    """(r_out, r_in) = energy ranks of unfold(W, 0) and unfold(W, 1); exact multilinear rank
    recovered at tau close to 1."""
    cases = 0
    while cases < 4:
        c_out, c_in, k = rng.randint(4, 24), rng.randint(4, 16), rng.choice([1, 3, 3])
        # decaying channel spectra, like a trained layer
        w = torch.einsum("oikl,o,i->oikl", torch.randn(c_out, c_in, k, k, generator=torch_rng),
                         torch.linspace(1.0, 0.05, c_out) ** 2, torch.linspace(1.0, 0.1, c_in))
        tau = round(rng.uniform(0.5, 0.98), 4)
        shares = [_shares(torch.linalg.svdvals(_unfold(w, m).double())) for m in (0, 1)]
        if min(abs(s - tau) for share in shares for s in share) < 1e-3:
            continue
        cases += 1
        expected = tuple(next(i + 1 for i, s in enumerate(share) if s >= tau) for share in shares)
        got = student.call("tucker2_ranks", w, tau)
        assert isinstance(got, tuple | list) and _same(tuple(got), expected), (
            f"tucker2_ranks on a {tuple(w.shape)} kernel at tau={tau} should be the energy "
            f"ranks of unfold(W, 0) and unfold(W, 1) = {expected}, got {got}"
        )
    while True:  # each mode's last singular value holds >= 1e-5 of the energy: at tau =
        # 1 - 1e-6 exactly r singular values are needed, whatever the SVD's rounding
        w, r_out, r_in = _exact_tucker(rng, torch_rng)
        shares = [_shares(torch.linalg.svdvals(_unfold(w, m))) for m in (0, 1)]
        if all(share[r - 2] < 1 - 1e-5 for share, r in zip(shares, (r_out, r_in), strict=True)
               if r > 1):
            break
    got = student.call("tucker2_ranks", w, 1 - 1e-6)
    assert isinstance(got, tuple | list) and _same(tuple(got), (r_out, r_in)), (
        f"tucker2_ranks on a {tuple(w.shape)} kernel of multilinear rank ({r_out}, {r_in}, ...) "
        f"at tau = 1 - 1e-6 should be ({r_out}, {r_in}), got {got}"
    )


@pytest.mark.points(2)
def test_tucker2_rank_for_budget(student, rng):
    """Largest R <= min(C_out, C_in) with C_in R + R^2 k_h k_w + R C_out <= C_out C_in k_h k_w /
    rate (weights only), at least 1: eight drawn cases, both ends of the range, and a budget
    met exactly."""
    cases = 0
    while cases < 8:
        c_out, c_in = rng.randint(2, 256), rng.randint(2, 256)
        k = rng.choice([1, 3, 3, 5, (3, 1), (3, 5)])
        rate = round(rng.uniform(1.0, 12.0), 2)
        kh, kw = pair(k)
        budget = c_out * c_in * kh * kw / rate
        counts = [c_in * r + r * r * kh * kw + r * c_out for r in range(1, min(c_out, c_in) + 1)]
        if min(abs(n - budget) for n in counts) < 1e-6 * budget:
            continue  # a count on the budget: N / rate and N <= n * rate may round apart
        cases += 1
        _check_rank_for_budget(student, c_out, c_in, k, rate)
    # the two ends of [1, min(C_out, C_in)]: a budget even R = 1 exceeds (the answer is 1), and
    # one that every R up to min(C_out, C_in) fits (the answer is that minimum, no more)
    c_out, c_in, k = rng.randint(16, 256), rng.randint(16, 256), rng.choice([1, 3, (3, 5)])
    kh, kw = pair(k)
    one = c_in + kh * kw + c_out
    _check_rank_for_budget(student, c_out, c_in, k,
                           round(c_out * c_in * kh * kw / one * rng.uniform(1.5, 4.0), 2))
    c_out, c_in, k = rng.randint(128, 256), rng.randint(2, 4), rng.choice([3, 5, (3, 5)])
    kh, kw = pair(k)
    full = c_in * c_in + c_in * c_in * kh * kw + c_in * c_out  # R = min(C_out, C_in) = C_in
    most = c_out * c_in * kh * kw / full  # the largest rate at which R = C_in fits
    _check_rank_for_budget(student, c_out, c_in, k, round(rng.uniform(1.0, most / 1.5), 2))
    # a budget met exactly ("<="): an integer rate and C_in solved so that R's count equals
    # C_out C_in k_h k_w / rate; N / rate, n * rate and N / n are then exact in floating point,
    # so every correct way of writing the comparison agrees that R fits
    while True:
        r, c_out, rate = rng.randint(1, 24), rng.randint(2, 256), rng.randint(2, 6)
        k = rng.choice([1, 3, 5, (3, 1), (3, 5)])
        kh, kw = pair(k)
        denominator = c_out * kh * kw - rate * r
        numerator = rate * r * (r * kh * kw + c_out)
        if denominator > 0 and numerator % denominator == 0:
            c_in = numerator // denominator
            if r <= min(c_out, c_in) and c_in <= 256:
                break
    _check_rank_for_budget(student, c_out, c_in, k, float(rate))


def _check_rank_for_budget(student, c_out: int, c_in: int, k, rate: float) -> None:
    kh, kw = pair(k)
    budget = c_out * c_in * kh * kw / rate
    fits = [r for r in range(1, min(c_out, c_in) + 1)
            if c_in * r + r * r * kh * kw + r * c_out <= budget]
    expected = max(fits, default=1)
    got = student.call("tucker2_rank_for_budget", c_out, c_in, k, rate)
    assert _same(got, expected), (
        f"tucker2_rank_for_budget({c_out}, {c_in}, {k}, {rate}): the largest R in [1, "
        f"{min(c_out, c_in)}] with {c_in}R + {kh * kw}R^2 + {c_out}R <= {budget:.1f} is "
        f"{expected} (1 if even R = 1 does not fit), got {got}"
    )


@pytest.mark.points(1)
def test_arguments_outside_the_contract_are_refused(student, rng, torch_rng):
    """svd_linear and hosvd_tucker2 raise ValueError for a rank outside [1, the smaller side of
    the matrix or unfolding] and accept both ends; tucker2_conv and cp_conv raise ValueError
    for a grouped conv, tucker2_conv for a method other than "hosvd" and "hooi"."""
    i, o, _, bias, w, b, _ = _draw_linear(rng, torch_rng)
    spec, k = _linear_spec(i, o, bias, w, b), min(i, o)
    for rank in (0, k + 1):
        refuses(student, "svd_linear", spec, rank,
                why=f"a rank outside [1, {k}] for a Linear({i}, {o})")
    for rank in (1, k):
        got = student.call("svd_linear", spec, rank)
        widths = [leaf.config.get("out_features")
                  for leaf in returned_module(got, "svd_linear").leaves()]
        assert widths[:1] == [rank], (
            f"svd_linear(Linear({i}, {o}), {rank}): a rank in [1, {k}] is within the contract; "
            f"the first layer should have {rank} outputs, got layers of widths {widths}"
        )
    c_out, c_in, kh, kw = rng.randint(2, 12), rng.randint(2, 12), rng.choice([1, 3]), 3
    weight = torch.randn(c_out, c_in, kh, kw, generator=torch_rng, dtype=torch.float64)
    most = (min(c_out, c_in * kh * kw), min(c_in, c_out * kh * kw))
    what = f"hosvd_tucker2 on a {(c_out, c_in, kh, kw)} kernel"
    for ranks in ((0, 1), (1, 0), (most[0] + 1, most[1]), (most[0], most[1] + 1)):
        refuses(student, "hosvd_tucker2", weight, *ranks,
                why=f"ranks outside [1, {most[0]}] x [1, {most[1]}]")
    for ranks in ((1, 1), most):
        core = student.call("hosvd_tucker2", weight, *ranks)[0]
        assert isinstance(core, torch.Tensor) and tuple(core.shape) == (*ranks, kh, kw), (
            f"{what} at ranks {ranks} (within the contract) should give a core of shape "
            f"{(*ranks, kh, kw)}, got {getattr(core, 'shape', core)}"
        )
    groups = rng.choice([2, 4])
    grouped = layer("Conv2d", groups * rng.randint(1, 3), groups * rng.randint(1, 3), 3,
                    padding=1, groups=groups)
    refuses(student, "tucker2_conv", grouped, 1, 1, why=f"a conv with groups={groups}")
    refuses(student, "cp_conv", grouped, 2, why=f"a conv with groups={groups}")
    kwargs, state = _draw_conv(rng, torch_rng)
    method = rng.choice(["svd", "tucker", "HOSVD", "cp"])
    refuses(student, "tucker2_conv", _conv_spec(kwargs, state), 1, 1, method=method,
            why=f"the methods are 'hosvd' and 'hooi', not {method!r}")


@pytest.mark.points(1)
def test_decompositions_leave_their_layer_unchanged(student, rng, torch_rng):
    """svd_linear ("`linear` is left unchanged") and tucker2_conv ("`conv` is left
    unchanged", either method) build new layers: the layer they were given keeps its weight and
    bias (changed_state)."""
    i, o, rank, bias, w, b, _ = _draw_linear(rng, torch_rng, bias=True)
    spec = _linear_spec(i, o, bias, w, b)
    what = f"svd_linear(nn.Linear({i}, {o}), {rank})"
    _, (after, _) = student.call_inspect("svd_linear", spec, rank)
    changed = changed_state(spec.state_dict, returned_module(after, f"the Linear after {what}"))
    assert not changed, (
        f"{what} changed the layer it was given ({changed}): build new layers and leave "
        f"`linear` as it was"
    )
    kwargs, state, r_out, r_in = _draw_tucker_case(rng, torch_rng, bias=True)
    kh, kw = pair(kwargs["kernel_size"])
    # HOOI's projected unfoldings hold at most r_in k_h k_w (r_out k_h k_w) directions
    fits_hooi = r_out <= r_in * kh * kw and r_in <= r_out * kh * kw
    method = rng.choice(["hosvd", "hooi"]) if fits_hooi else "hosvd"
    spec = _conv_spec(kwargs, state)
    what = f"tucker2_conv({_describe(kwargs)}, {r_out}, {r_in}, method={method!r})"
    _, (after, *_) = student.call_inspect("tucker2_conv", spec, r_out, r_in, method=method)
    changed = changed_state(state, returned_module(after, f"the conv after {what}"))
    assert not changed, (
        f"{what} changed the conv it was given ({changed}): build new layers and leave `conv` "
        f"as it was"
    )


# ------------------------------------------------------------------------------------------
# 6. Compressing the CNN


BOTH = ("conv2", "conv3")  # compress_cnn's default `layers`


def _oracle_compress(model: nn.Module, tau: float, layers: tuple[str, ...] = BOTH,
                     dtype: torch.dtype = torch.float64) -> tuple[nn.Module, dict[str, tuple]]:
    """Tucker-2 (HOSVD) of the named convs at energy ranks, built here from the definitions
    (the SVDs in `dtype`)."""
    model = copy.deepcopy(model)
    ranks = {}
    for name in layers:
        conv = getattr(model, name)
        w = conv.weight.detach().to(dtype)
        r_out, r_in = (_energy_rank(torch.linalg.svdvals(_unfold(w, m)), tau) for m in (0, 1))
        u_out, u_in = _leading(_unfold(w, 0), r_out), _leading(_unfold(w, 1), r_in)
        core = torch.einsum("oikl,or,is->rskl", w, u_out, u_in)
        block = nn.Sequential(nn.Conv2d(conv.in_channels, r_in, 1, bias=False),
                              nn.Conv2d(r_in, r_out, 3, padding=1, bias=False),
                              nn.Conv2d(r_out, conv.out_channels, 1, bias=False))
        with torch.no_grad():
            block[0].weight.copy_(u_in.T[:, :, None, None])
            block[1].weight.copy_(core)
            block[2].weight.copy_(u_out[:, :, None, None])
        setattr(model, name, block)
        ranks[name] = (r_out, r_in)
    return model.eval(), ranks


def _returned_ranks(returned, what: str, layers: tuple[str, ...] = BOTH) -> dict[str, tuple]:
    returned_module(returned, what)
    types = {info.name: info.type for info in returned.layers}
    kept = [name for name in BOTH if name not in layers and types.get(name) != "Conv2d"]
    assert not kept, (
        f"{what}: only the convs named in layers={layers} are decomposed; {kept} should stay "
        f"nn.Conv2d, got {[types.get(name) for name in kept]}"
    )
    ranks = {}
    for name in layers:
        convs = [info for info in returned.layers if info.name.startswith(name + ".")
                 and info.type == "Conv2d"]
        assert len(convs) == 3, (
            f"{what}: {name} should become an nn.Sequential of three Conv2d in the same place "
            f"({name}.0, {name}.1, {name}.2), got {[(i.name, i.type) for i in convs]}"
        )
        first, middle, last = (info.config for info in convs)
        ranks[name] = (middle.get("out_channels"), middle.get("in_channels"))
    return ranks


def _random_cnn_state(channels, gen: torch.Generator) -> dict[str, torch.Tensor]:
    state = {}
    for key, value in nncourse.make_cnn(channels).state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(100)
        elif key.endswith("running_var"):
            state[key] = torch.rand(value.shape, generator=gen) + 0.5
        elif key.endswith("conv2.weight") or key.endswith("conv3.weight"):
            o, i = value.shape[:2]  # decaying channel spectra, like a trained layer
            state[key] = torch.einsum("oikl,o,i->oikl", torch.randn(value.shape, generator=gen),
                                      torch.linspace(1.0, 0.05, o), torch.linspace(1.0, 0.1, i))
        else:
            state[key] = torch.randn(value.shape, generator=gen) * 0.3
    return state


def _draw_compressible_cnn(rng: random.Random, gen: torch.Generator
                           ) -> tuple[tuple[int, int, int], dict, nn.Module, float]:
    """(channels, state, the model, tau): a small make_cnn with random weights whose conv2 and
    conv3 have decaying spectra, and a tau at which the rule decides, not rounding: tau at
    least 1e-4 from every energy share of both unfoldings of both kernels, and a clear cut at
    each energy rank (_clear_truncation with a relative gap of 1e-3; the kernels are float32)."""
    while True:
        channels = (rng.choice([4, 8]), rng.choice([8, 12, 16]), rng.choice([16, 20, 24]))
        state = _random_cnn_state(channels, gen)
        local = nncourse.make_cnn(channels)
        local.load_state_dict(state)
        tau = round(rng.uniform(0.6, 0.95), 3)
        shares = [s for name in BOTH for m in (0, 1)
                  for s in _shares(torch.linalg.svdvals(_unfold(state[f"{name}.weight"].double(),
                                                                 m)))]
        if min(abs(s - tau) for s in shares) < 1e-4:
            continue
        _, ranks = _oracle_compress(local, tau)
        if all(_clear_truncation(state[f"{name}.weight"], dict(enumerate(ranks[name])), 1e-3)
               for name in ranks):
            return channels, state, local, tau


@pytest.mark.points(2)
def test_compress_cnn_ranks_and_outputs(student, rng, torch_rng):
    """conv2 and conv3 (the default `layers`; on the third draw only the one conv named in
    `layers`, the other stays a Conv2d) become Tucker-2 blocks at the energy ranks of their own
    kernels; the compressed model computes what the grader's HOSVD compression computes. Drawn
    so that the rule decides, not rounding: tau at least 1e-4 from every energy share, and a
    clear cut at each rank (the kernels are float32)."""
    for layers in (None, None, (rng.choice(BOTH),)):
        channels, state, local, tau = _draw_compressible_cnn(rng, torch_rng)
        oracle, ranks = _oracle_compress(local, tau, layers or BOTH)
        asked = {} if layers is None else {"layers": layers}
        what = (f"compress_cnn(make_cnn({channels}) with random weights, tau={tau}"
                + ("" if layers is None else f", layers={layers}") + ")")
        got = student.call("compress_cnn", kit_model("make_cnn", channels=channels,
                                                     state_dict=state), tau, **asked)
        have = _returned_ranks(got, what, layers or BOTH)
        assert have == ranks, (
            f"{what}: the (r_out, r_in) of {' and '.join(ranks)} should be the energy ranks "
            f"{ranks}, got {have}"
        )
        x = torch.randn(6, 1, 8, 8, generator=torch_rng)
        with torch.no_grad():
            expected = oracle(x)
        out = _rebuilt_forward(got, x, what)
        gap = float((out - expected).abs().max())
        assert gap < 1e-3 * max(1.0, float(expected.abs().max())), (
            f"{what}: logits should equal those of the HOSVD Tucker-2 compression at these "
            f"ranks; max difference {gap:.3g}"
        )


@pytest.mark.points(1)
def test_compress_cnn_leaves_the_model_unchanged(student, rng, torch_rng):
    """compress_cnn returns a new model; the input keeps its convs and weights."""
    channels = (4, 8, 16)
    state = _random_cnn_state(channels, torch_rng)
    tau = round(rng.uniform(0.6, 0.9), 3)
    _, (after, _) = student.call_inspect(
        "compress_cnn", kit_model("make_cnn", channels=channels, state_dict=state), tau)
    after = returned_module(after, "the model after compress_cnn")
    types = {info.name: info.type for info in after.layers}
    assert types.get("conv2") == "Conv2d" and types.get("conv3") == "Conv2d", (
        f"compress_cnn changed the model it was given (conv2 is now {types.get('conv2')}): "
        f"work on a copy (copy.deepcopy)"
    )
    changed = sorted(k for k, v in state.items()
                     if k not in after.state_dict or not torch.equal(after.state_dict[k], v))
    assert not changed, f"compress_cnn changed the given model's {changed}: work on a copy"


@pytest.mark.slow_check
@pytest.mark.points(3)
def test_compress_cnn_shipped_model(student, rng):
    """The shipped CNN at the asked tau: exact energy ranks, MACs (counted here) at least
    MIN_MAC_REDUCTION x fewer, test accuracy before fine-tuning above the threshold.

    Both draws are measured (no training, no ALS): every energy share of the shipped conv2 and
    conv3 lies >= 4e-4 from 0.8 and 0.85, and each cut has a relative singular-value gap of
    >= 1 %, so the ranks and the HOSVD are the same in float32 and float64."""
    tau = rng.choice(sorted(ACCURACY_BEFORE_FINETUNE))
    state = pretrained_state(PRETRAINED)
    original = nncourse.load_pretrained(PRETRAINED)
    _, ranks = _oracle_compress(original, tau)
    what = f"compress_cnn(the shipped CNN{CHANNELS}, tau={tau})"
    got = student.call("compress_cnn", kit_model("make_cnn", channels=CHANNELS,
                                                 state_dict=state), tau)
    have = _returned_ranks(got, what)
    assert have == ranks, f"{what}: conv2/conv3 ranks should be {ranks}, got {have}"
    model = returned_module(got, what).rebuild()
    reduction = _macs(original) / _macs(model)
    assert reduction >= MIN_MAC_REDUCTION, (
        f"{what}: MACs should drop at least {MIN_MAC_REDUCTION}x, got {reduction:.2f}x"
    )
    accuracy = accuracy_on_test_split(model)
    threshold = ACCURACY_BEFORE_FINETUNE[tau]
    assert accuracy >= threshold, (
        f"{what}: test accuracy before fine-tuning (measured by the grader) should be >= "
        f"{threshold}, got {accuracy:.4f}"
    )


def _reference_finetune(seed: int) -> float:
    """Test accuracy of the grader's own run: HOSVD Tucker-2 of conv2 and conv3 at tau = 0.8,
    then 3 epochs of nncourse.train at lr 1e-3 with this seed."""
    model, _ = _oracle_compress(nncourse.load_pretrained(PRETRAINED), 0.8)
    x, y, _, _ = nncourse.load_digits_split()
    with one_thread():
        return accuracy_on_test_split(nncourse.train(model, x, y, epochs=3, lr=1e-3, seed=seed))


@pytest.mark.slow_check
@pytest.mark.points(3)
def test_compress_and_finetune(student, rng):
    """Tucker-2 at tau = 0.8 plus 3 epochs of fine-tuning: MACs and accuracy measured here;
    accuracy >= ACCURACY_AFTER_FINETUNE or what the grader's own run reaches
    (grader.checks.demanded)."""
    seed = rng.randint(0, 9)
    tau = 0.8
    original = nncourse.load_pretrained(PRETRAINED)
    what = f"compress_and_finetune(the shipped CNN, tau={tau}, epochs=3, lr=1e-3, seed={seed})"
    got = student.with_timeout(120).call(
        "compress_and_finetune", kit_model("make_cnn", channels=CHANNELS,
                                           state_dict=pretrained_state(PRETRAINED)),
        tau, epochs=3, lr=1e-3, seed=seed)
    model = returned_module(got, what).rebuild()
    reduction = _macs(original) / _macs(model)
    assert reduction >= MIN_MAC_REDUCTION, (
        f"{what}: MACs should drop at least {MIN_MAC_REDUCTION}x, got {reduction:.2f}x"
    )
    accuracy = accuracy_on_test_split(model)
    demand = demanded(accuracy, ACCURACY_AFTER_FINETUNE, lambda: _reference_finetune(seed),
                      REFERENCE_MARGIN)
    assert demand.met_by(accuracy), (
        f"{what}: test accuracy after fine-tuning (measured by the grader) should be >= "
        f"{demand.minimum:.4f}{demand.note()}, got {accuracy:.4f}"
    )


def _finetuned_logits(model: nn.Module, epochs: int, lr: float, seed: int) -> torch.Tensor:
    """Test-split logits of a copy of `model` after nncourse.train on the training split with
    these arguments (epochs 0: untrained), on one thread as in the kernel."""
    x, y, x_test, _ = nncourse.load_digits_split()
    with one_thread():
        model = copy.deepcopy(model)
        if epochs:
            model = nncourse.train(model, x, y, epochs=epochs, lr=lr, seed=seed)
        with torch.no_grad():
            return model.eval()(x_test)


def _rel_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.slow_check
@pytest.mark.points(2)
def test_compress_and_finetune_follows_the_recipe(student, rng, torch_rng):
    """epochs, lr and seed are the contract's ("compress_cnn(model, tau), then nncourse.train
    on the training split for `epochs` epochs at learning rate `lr` with shuffling seed
    `seed`"): on a small random CNN, at epochs 1 or 2, the returned model's test logits are
    those of the grader's own run of that recipe (within a tenth of the distance to the runs
    with one epoch more or fewer, another lr, another seed). Drawn where those runs lie at
    least 1000 times farther away than the grader's run from an HOSVD in float32 lies from the
    one in float64 (the rounding a correct compression may differ by: 100 times what the check
    allows; Tucker factors that differ only in sign train to the same network)."""
    while True:
        channels, state, local, tau = _draw_compressible_cnn(rng, torch_rng)
        epochs, lr, seed = rng.randint(1, 2), rng.choice([1e-3, 3e-3]), rng.randint(0, 99)
        oracle, _ = _oracle_compress(local, tau)
        expected = _finetuned_logits(oracle, epochs, lr, seed)
        noise = _rel_gap(_finetuned_logits(_oracle_compress(local, tau, dtype=torch.float32)[0],
                                           epochs, lr, seed), expected)
        others = {f"epochs={epochs - 1}": (epochs - 1, lr, seed),
                  f"epochs={epochs + 1}": (epochs + 1, lr, seed),
                  f"lr={lr * 2:g}": (epochs, lr * 2, seed),
                  f"seed={seed + 1}": (epochs, lr, seed + 1)}
        apart = {name: _rel_gap(_finetuned_logits(oracle, *args), expected)
                 for name, args in others.items()}
        if noise * 1000 <= min(apart.values()):
            break
    what = (f"compress_and_finetune(make_cnn({channels}) with random weights, tau={tau}, "
            f"epochs={epochs}, lr={lr}, seed={seed})")
    got = student.with_timeout(60).call(
        "compress_and_finetune", kit_model("make_cnn", channels=channels, state_dict=state),
        tau, epochs=epochs, lr=lr, seed=seed)
    model = returned_module(got, what).rebuild().eval()
    x_test = nncourse.load_digits_split()[2]
    try:
        with torch.no_grad():
            logits = model(x_test)
    except RuntimeError as error:  # the returned layers do not fit together
        raise AssertionError(f"{what}: the returned model fails on the test images: "
                             f"{str(error)[:300]}") from None
    gap = _rel_gap(logits, expected) if logits.shape == expected.shape else float("inf")
    allowed = min(apart.values()) / 10
    assert gap <= allowed, (
        f"{what}: the test logits should be those of compress_cnn then nncourse.train(epochs="
        f"{epochs}, lr={lr}, seed={seed}); relative difference {gap:.3g} (at most "
        f"{allowed:.3g}; the same recipe with "
        + ", ".join(f"{name} lands {value:.3g} away" for name, value in apart.items()) + ")"
    )


# ------------------------------------------------------------------------------------------
# 8. Tensor trains
#
# Oracles: a TT-SVD written here in numpy (float64), tensorly's tt_to_tensor,
# tensor_train_matrix and tt_matrix_to_matrix, a core-by-core forward made of torch.mm only
# (so that FlopCounterMode counts every multiply-accumulate), and the notebook's formulas.
# The TT-SVD's ranks are checked only where the rule decides them with room to spare
# (_tt_clear): rounding, or another correct way of writing the sum of the tail, could move a
# rank whose tail lies next to delta.


def _tt_feasible(modes: list[int], wanted: list[int]) -> list[int]:
    """[1, r_1, ..., r_{d-1}, 1]: the wanted inner ranks, each lowered until r_k <= r_{k-1} n_k
    and r_k <= n_{k+1} r_{k+1}, so that random cores of these ranks give a tensor of exactly
    these TT ranks (generically)."""
    d = len(modes)
    ranks = [1, *wanted, 1]
    for k in range(1, d):
        ranks[k] = min(ranks[k], ranks[k - 1] * modes[k - 1])
    for k in range(d - 1, 0, -1):
        ranks[k] = min(ranks[k], ranks[k + 1] * modes[k])
    return ranks


def _tt_chain(cores: list[torch.Tensor]) -> torch.Tensor:
    """The grader's own contraction of TT cores (3-way, or 4-way TT-matrix cores flattened
    pairwise), checked against tensorly's tt_to_tensor."""
    modes = [core.shape[1:-1] for core in cores]
    flat = [core.reshape(core.shape[0], -1, core.shape[-1]).double() for core in cores]
    full = flat[0][0]  # (n_1, r_1)
    for core in flat[1:]:
        full = (full @ core.reshape(core.shape[0], -1)).reshape(-1, core.shape[-1])
    with tl.backend_context("pytorch"):
        theirs = torch.as_tensor(tl.tt_to_tensor(flat)).reshape(-1)
    oracles_agree(torch.allclose(full.reshape(-1), theirs, rtol=1e-10, atol=1e-12 * float(
        theirs.abs().max())), "TT contraction against tensorly's tt_to_tensor")
    return full.reshape([size for mode in modes for size in mode])


def _random_tt(modes: list[int], ranks: list[int], gen: torch.Generator
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    cores = [torch.randn(ranks[k], n, ranks[k + 1], generator=gen, dtype=torch.float64)
             for k, n in enumerate(modes)]
    return _tt_chain(cores), cores


def _np_tt_svd(a: torch.Tensor, eps: float) -> tuple[list[int], list[tuple], list]:
    """TT-SVD of Oseledets' Algorithm 1 in numpy, float64: (ranks [1, r_1, ..., 1], per step
    (singular values, tails, delta, rank) with tails[j] = norm of s[j:], the cores)."""
    c = a.detach().double().numpy()
    shape, d = c.shape, c.ndim
    delta = eps / math.sqrt(d - 1) * float(np.linalg.norm(c))
    ranks, steps, cores, r = [1], [], [], 1
    for k in range(d - 1):
        c = c.reshape(r * shape[k], -1)
        u, s, vt = np.linalg.svd(c, full_matrices=False)
        tails = np.append(np.sqrt(np.cumsum((s**2)[::-1])[::-1]), 0.0)
        rank = next(j for j in range(1, len(s) + 1) if tails[j] <= delta)
        steps.append((s, tails, delta, rank))
        cores.append(u[:, :rank].reshape(r, shape[k], rank))
        c = s[:rank, None] * vt[:rank]
        r = rank
        ranks.append(rank)
    cores.append(c.reshape(r, shape[-1], 1))
    return [*ranks, 1], steps, cores


def _tt_clear(steps: list[tuple], margin: float = 0.01, gap: float = 1e-3) -> bool:
    """Whether every truncation of the sweep is decided with room to spare: the kept rank's
    tail <= (1 - margin) delta, the next smaller rank's tail >= (1 + margin) delta (a rank of
    1 at its floor has none), and the singular values at the cut apart by a relative gap, so
    that the kept subspace, and with it the next step, is unique."""
    for s, tails, delta, rank in steps:
        if tails[rank] > (1 - margin) * delta:
            return False
        if rank > 1 and tails[rank - 1] < (1 + margin) * delta:
            return False
        if rank < len(s) and s[rank - 1] - s[rank] < gap * s[rank - 1]:
            return False
    return True


def _tt_cores(got, d: int, what: str, dims: int = 3) -> list[torch.Tensor]:
    assert isinstance(got, list | tuple) and len(got) == d, (
        f"{what} should return a list of {d} cores, got "
        + (f"{len(got)}" if isinstance(got, list | tuple) else type(got).__name__)
    )
    cores = [_tensor(core, f"{what}: each core") for core in got]
    shapes = [tuple(core.shape) for core in cores]
    assert all(len(shape) == dims for shape in shapes), (
        f"{what}: every core should have {dims} dimensions, got shapes {shapes}"
    )
    return cores


def _tt_ranks_of(cores: list[torch.Tensor]) -> list[int]:
    return [int(cores[0].shape[0])] + [int(core.shape[-1]) for core in cores]


def _check_tt_shapes(cores: list[torch.Tensor], modes, ranks: list[int] | None, what: str
                     ) -> None:
    """Core k has shape (r_{k-1}, n_k, r_k) (or (r_{k-1}, m_k, n_k, r_k)): r_0 = r_d = 1, every
    rank at least 1, neighbouring ranks agree, the modes are the tensor's (and the ranks `ranks`
    when given); checked before the grader contracts the cores."""
    shapes = [tuple(core.shape) for core in cores]
    chained = _tt_ranks_of(cores)
    want = [(chained[k], *mode, chained[k + 1]) for k, mode in enumerate(modes)]
    links = all(shapes[k][-1] == shapes[k + 1][0] for k in range(len(shapes) - 1))
    assert links and chained[0] == chained[-1] == 1 and shapes == want and min(chained) >= 1, (
        f"{what}: core k should have shape (r_(k-1), {', '.join('n_k' for _ in modes[0])}, r_k)"
        f" with r_0 = r_d = 1, every rank at least 1, and the modes "
        f"{[tuple(m) for m in modes]}, got shapes {shapes}"
    )
    if ranks is not None:
        assert chained == ranks, f"{what}: the TT ranks should be {ranks}, got {chained}"


def _draw_noisy_tt(rng: random.Random, gen: torch.Generator, d: int
                   ) -> tuple[torch.Tensor, float, float]:
    """A tensor of low TT rank plus Gaussian noise of relative size sigma, and an eps around
    sigma (so that the ranks come out below, at or above the exact ones)."""
    modes = [rng.randint(2, 6) for _ in range(d)]
    ranks = _tt_feasible(modes, [rng.randint(1, 4) for _ in range(d - 1)])
    a, _ = _random_tt(modes, ranks, gen)
    sigma = 10 ** rng.uniform(-2.0, -0.5)
    a = a + sigma * float(a.norm()) / math.sqrt(a.numel()) * torch.randn(
        a.shape, generator=gen, dtype=torch.float64)
    return a, sigma, round(sigma * 10 ** rng.uniform(-0.5, 0.5), 4)


@pytest.mark.points(2)
def test_tt_to_tensor(student, rng, torch_rng):
    """Entry [i_1, ..., i_d] = G_1[:, i_1, :] ... G_d[:, i_d, :] (tensorly's tt_to_tensor),
    shape (n_1, ..., n_d), a mode of size 1 included; random cores of random ranks."""
    for draw in range(3):
        d = (2, rng.randint(3, 5), rng.randint(3, 5))[draw]
        modes = [rng.randint(1, 5) for _ in range(d)]
        if draw == 2:
            modes[rng.randrange(d)] = 1
        ranks = [1] + [rng.randint(1, 4) for _ in range(d - 1)] + [1]
        expected, cores = _random_tt(modes, ranks, torch_rng)
        what = f"tt_to_tensor of cores of shapes {[tuple(c.shape) for c in cores]}"
        got = _tensor(student.call("tt_to_tensor", cores), what)
        assert tuple(got.shape) == tuple(modes), (
            f"{what} should have shape {tuple(modes)} (one mode per core, a mode of size 1 "
            f"included), got {tuple(got.shape)}"
        )
        assert got.dtype == torch.float64, (
            f"{what}: the tensor should be in the cores' dtype, torch.float64, got {got.dtype}"
        )
        gap = float((got.double() - expected).abs().max())
        assert gap <= 1e-9 * float(expected.abs().max()), (
            f"{what}: entry [i_1, ..., i_d] should be G_1[:, i_1, :] @ ... @ G_d[:, i_d, :]; "
            f"max difference {gap:.3g}"
        )


@pytest.mark.points(3)
def test_tt_svd_exact_tt_rank(student, rng, torch_rng):
    """A tensor built from random cores of TT ranks r_k: the ranks come back exactly, core k
    of shape (r_(k-1), n_k, r_k) in float64, and the tensor is rebuilt to float precision
    (relative error <= 1e-9). Drawn so that each unfolding's r_k-th singular value is >= 10
    delta and its tail beyond r_k (rounding noise) <= 1e-3 delta, for eps in [1e-4, 1e-2]."""
    for _ in range(3):
        while True:
            d = rng.randint(3, 5)
            modes = [rng.randint(2, 6) for _ in range(d)]
            ranks = _tt_feasible(modes, [rng.randint(2, 5) for _ in range(d - 1)])
            a, _ = _random_tt(modes, ranks, torch_rng)
            eps = round(10 ** rng.uniform(-4, -2), 6)
            delta = eps / math.sqrt(d - 1) * float(a.norm())
            spectra = [torch.linalg.svdvals(a.reshape(math.prod(modes[:k]), -1))
                       for k in range(1, d)]
            if all(len(s) >= r and float(s[r - 1]) >= 10 * delta
                   and float(s[r:].norm()) <= 1e-3 * delta
                   for s, r in zip(spectra, ranks[1:-1], strict=True)):
                break
        oracles_agree(_np_tt_svd(a, eps)[0] == ranks, "numpy TT-SVD on an exact TT-rank draw")
        what = (f"tt_svd on a {tuple(modes)} tensor built from random cores of TT ranks "
                f"{ranks}, eps={eps}")
        cores = _tt_cores(student.call("tt_svd", a, eps), d, what)
        _check_tt_shapes(cores, [(n,) for n in modes], ranks, what)
        dtypes = sorted({str(core.dtype) for core in cores})
        assert dtypes == ["torch.float64"], (
            f"{what}: the cores should be in the tensor's dtype, torch.float64, got {dtypes}"
        )
        error = _rel_err(a, _tt_chain(cores))
        assert error <= 1e-9, (
            f"{what}: the cores should rebuild the tensor exactly (to float64 precision); "
            f"relative error {error:.3g}"
        )


@pytest.mark.points(2)
def test_tt_svd_error_bound(student, rng, torch_rng):
    """On noisy tensors (any draw): valid cores (r_0 = r_d = 1, neighbouring ranks agree, the
    tensor's modes) whose tensor B has ||A - B||_F <= eps ||A||_F (Theorem 2.2), d = 2 to 5."""
    for d in (2, rng.randint(3, 4), 5):
        a, sigma, eps = _draw_noisy_tt(rng, torch_rng, d)
        what = (f"tt_svd on a {tuple(a.shape)} tensor (low TT rank plus {sigma:.3f} relative "
                f"noise), eps={eps}")
        cores = _tt_cores(student.call("tt_svd", a, eps), d, what)
        _check_tt_shapes(cores, [(n,) for n in a.shape], None, what)
        error = _rel_err(a, _tt_chain(cores))
        assert error <= eps * (1 + 1e-6), (
            f"{what}: ||A - B||_F / ||A||_F should be <= eps = {eps} (each of the {d - 1} "
            f"truncations drops at most delta = eps / sqrt(d - 1) * ||A||_F), got {error:.5f}"
        )


@pytest.mark.points(3)
def test_tt_svd_ranks(student, rng, torch_rng):
    """The ranks of the rule (smallest r >= 1 whose discarded tail is <= delta = eps /
    sqrt(d - 1) ||A||_F, at each step of the sweep) on noisy tensors where every truncation is
    clear, against the grader's numpy TT-SVD; and every rank at its floor of 1
    where delta >= 1.2 ||A||_F (the rule alone would keep nothing)."""
    for d in (2, 3, rng.randint(4, 5)):
        while True:
            a, sigma, eps = _draw_noisy_tt(rng, torch_rng, d)
            ranks, steps, _ = _np_tt_svd(a, eps)
            if _tt_clear(steps):
                break
        what = (f"tt_svd on a {tuple(a.shape)} tensor (low TT rank plus {sigma:.3f} relative "
                f"noise), eps={eps}")
        cores = _tt_cores(student.call("tt_svd", a, eps), d, what)
        got = _tt_ranks_of(cores)
        tails = "; ".join(f"step {k + 1}: tails {[round(float(t), 4) for t in tail[:r + 1]]}"
                          for k, (_, tail, _, r) in enumerate(steps))
        assert got == ranks, (
            f"{what}: the TT ranks should be {ranks} (at each step the smallest r >= 1 whose "
            f"tail sqrt(sum_(i > r) s_i^2) is <= delta = {steps[0][2]:.4f}; {tails}), got {got}"
        )
    d = rng.randint(2, 5)
    a, _ = _random_tt([rng.randint(2, 5) for _ in range(d)],
                      [1] + [rng.randint(1, 3) for _ in range(d - 1)] + [1], torch_rng)
    eps = round(math.sqrt(d - 1) * rng.uniform(1.2, 3.0), 3)
    what = f"tt_svd on a {tuple(a.shape)} tensor with eps={eps} (delta > ||A||_F)"
    cores = _tt_cores(student.call("tt_svd", a, eps), d, what)
    got = _tt_ranks_of(cores)
    assert got == [1] * (d + 1), (
        f"{what}: every rank should be 1 (a rank is at least 1, also where delta exceeds the "
        f"remainder's norm), got {got}"
    )


def _ttm_paired(w: torch.Tensor, out_modes, in_modes) -> torch.Tensor:
    d = len(out_modes)
    order = [axis for k in range(d) for axis in (k, d + k)]
    return w.reshape(*out_modes, *in_modes).permute(order).reshape(
        [m * n for m, n in zip(out_modes, in_modes, strict=True)])


def _ttm_oracle(w: torch.Tensor, out_modes, in_modes, ranks: list[int]
                ) -> tuple[list[int], torch.Tensor, bool]:
    """(the core ranks, the matrix the cores rebuild, whether every cut is clear) of the
    TT-matrix at `ranks` (lowered where too large): tensorly's tensor_train_matrix and
    tt_matrix_to_matrix, checked against a fixed-rank sweep in numpy."""
    with tl.backend_context("pytorch"):
        theirs = tensor_train_matrix(w.double().reshape(*out_modes, *in_modes),
                                     rank=list(ranks)).factors
        rebuilt = torch.as_tensor(tt_matrix_to_matrix(theirs))
    c, r, kept, clear = _ttm_paired(w.double(), out_modes, in_modes).numpy(), 1, [1], True
    pairs = c.shape
    for k in range(len(pairs) - 1):
        c = c.reshape(r * pairs[k], -1)
        u, s, vt = np.linalg.svd(c, full_matrices=False)
        r = min(ranks[k + 1], len(s))
        clear &= r == len(s) or bool(s[r - 1] - s[r] >= 1e-3 * s[r - 1])
        c = s[:r, None] * vt[:r]
        kept.append(r)
    kept.append(1)
    oracles_agree(kept == _tt_ranks_of(list(theirs)), "TT-matrix ranks against tensorly")
    return kept, rebuilt, clear


def _draw_ttm_modes(rng: random.Random, d: int) -> tuple[list[int], list[int]]:
    while True:
        out_modes = [rng.randint(1, 4) for _ in range(d)]
        in_modes = [rng.randint(1, 4) for _ in range(d)]
        if math.prod(out_modes) != math.prod(in_modes) and min(
                math.prod(out_modes), math.prod(in_modes)) >= 4:
            return out_modes, in_modes


def _check_ttm(student, w, out_modes, in_modes, ranks, what) -> None:
    kept, rebuilt, _ = _ttm_oracle(w, out_modes, in_modes, ranks)
    d = len(out_modes)
    cores = _tt_cores(student.call("tt_matrix", w, tuple(out_modes), tuple(in_modes), ranks),
                      d, what, dims=4)
    _check_tt_shapes(cores, list(zip(out_modes, in_modes, strict=True)), kept, what)
    dtypes = sorted({str(core.dtype) for core in cores})
    assert dtypes == ["torch.float64"], (
        f"{what}: the cores should be in W's dtype, torch.float64, got {dtypes}"
    )
    got = _tt_chain(cores).reshape(*[s for pair in zip(out_modes, in_modes, strict=True)
                                     for s in pair])
    got = got.permute(*range(0, 2 * d, 2), *range(1, 2 * d, 2)).reshape(w.shape)
    gap = float((got - rebuilt).norm() / w.norm())
    assert gap <= 1e-8, (
        f"{what}: the matrix the cores rebuild (W[i, j] = G_1[:, i_1, j_1, :] @ ... with the "
        f"row-major multi-indices of i and j) should be the TT-SVD of W paired as (m_1 n_1, "
        f"..., m_d n_d) at ranks {kept}, as tensorly's tensor_train_matrix gives it; relative "
        f"difference {gap:.3g}"
    )


@pytest.mark.points(2)
def test_tt_matrix_exact_at_large_ranks(student, rng, torch_rng):
    """Ranks above what the unfoldings allow are lowered to min(r_(k-1) m_k n_k, prod_(j>k)
    m_j n_j); the cores (r_(k-1), m_k, n_k, r_k) then rebuild W exactly; M != N."""
    for d in (2, 3):
        out_modes, in_modes = _draw_ttm_modes(rng, d)
        w = torch.randn(math.prod(out_modes), math.prod(in_modes), generator=torch_rng,
                        dtype=torch.float64)
        ranks = [1] + [rng.choice([64, 100, 10**6]) for _ in range(d - 1)] + [1]
        what = (f"tt_matrix(W of shape {tuple(w.shape)}, {tuple(out_modes)}, "
                f"{tuple(in_modes)}, {ranks})")
        _check_ttm(student, w, out_modes, in_modes, ranks, what)


@pytest.mark.points(3)
def test_tt_matrix_truncated(student, rng, torch_rng):
    """At ranks below the full ones (one possibly above, lowered): the TT-SVD of W paired as
    (m_1 n_1, ..., m_d n_d), compared through the matrix the cores rebuild with tensorly's
    tensor_train_matrix, on draws where each cut keeps a unique subspace (relative gap >=
    1e-3 between the kept and the first dropped singular value)."""
    for d in (2, 3, 4):
        while True:
            out_modes, in_modes = _draw_ttm_modes(rng, d)
            w = torch.randn(math.prod(out_modes), math.prod(in_modes), generator=torch_rng,
                            dtype=torch.float64)
            full, _, _ = _ttm_oracle(w, out_modes, in_modes, [1] + [10**6] * (d - 1) + [1])
            ranks = [1] + [rng.randint(1, max(1, r - 1)) for r in full[1:-1]] + [1]
            if d > 2:
                ranks[rng.randint(1, d - 1)] = 10**6
            kept, _, clear = _ttm_oracle(w, out_modes, in_modes, ranks)
            if clear and kept != full:
                break
        what = (f"tt_matrix(W of shape {tuple(w.shape)}, {tuple(out_modes)}, "
                f"{tuple(in_modes)}, {ranks})")
        _check_ttm(student, w, out_modes, in_modes, ranks, what)


def _tt_forward_mm(cores: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """y = x W^T core by core, left to right, with torch.mm only: step k multiplies a
    (batch prod_(j<k) m_j prod_(j>k) n_j) x (r_(k-1) n_k) matrix by (r_(k-1) n_k) x (m_k r_k)."""
    batch = x.shape[0]
    z = x.reshape(batch, 1, 1, -1)  # (batch, prod m_<k, r_(k-1), prod n_>=k)
    for core in cores:
        r0, m, n, r1 = core.shape
        done, rest = z.shape[1], z.shape[3] // n
        left = z.reshape(batch, done, r0, n, rest).permute(0, 1, 4, 2, 3).reshape(-1, r0 * n)
        right = core.permute(0, 2, 1, 3).reshape(r0 * n, m * r1)
        out = torch.mm(left, right).reshape(batch, done, rest, m, r1)
        z = out.permute(0, 1, 3, 4, 2).reshape(batch, done * m, r1, rest)
    return z.reshape(batch, -1)


def _dense_of(cores: list[torch.Tensor]) -> torch.Tensor:
    with tl.backend_context("pytorch"):
        return torch.as_tensor(tt_matrix_to_matrix([core.double() for core in cores]))


def _check_forward(got, expected: torch.Tensor, what: str, rtol: float = 1e-9,
                   dtype: torch.dtype = torch.float64) -> None:
    got = _tensor(got, what)
    assert tuple(got.shape) == tuple(expected.shape), (
        f"{what} should have shape (batch, M) = {tuple(expected.shape)}, got {tuple(got.shape)}"
    )
    assert got.dtype == dtype, f"{what}: the output should be in the inputs' dtype, {dtype}, " \
                               f"got {got.dtype}"
    gap = float((got.double() - expected).abs().max())
    assert gap <= rtol * max(1.0, float(expected.abs().max())), (
        f"{what}: the output should be x @ W^T for the TT-matrix W of the cores; max "
        f"difference {gap:.3g}"
    )


@pytest.mark.points(3)
def test_tt_linear_forward(student, rng, torch_rng):
    """Random cores (modes of size 1 included): the output equals x @ W^T with W the dense
    matrix of the same cores (tensorly's tt_matrix_to_matrix); and at full rank, with the
    grader's cores of a drawn W (tensorly's tensor_train_matrix), x @ W^T itself."""
    for d in (2, 3, 4):
        out_modes, in_modes = _draw_ttm_modes(rng, d)
        ranks = [1] + [rng.randint(1, 4) for _ in range(d - 1)] + [1]
        cores = [torch.randn(ranks[k], m, n, ranks[k + 1], generator=torch_rng,
                             dtype=torch.float64)
                 for k, (m, n) in enumerate(zip(out_modes, in_modes, strict=True))]
        x = torch.randn(rng.randint(1, 4), math.prod(in_modes), generator=torch_rng,
                        dtype=torch.float64)
        dense = _dense_of(cores)
        expected = x @ dense.T
        oracles_agree(torch.allclose(_tt_forward_mm(cores, x), expected, rtol=1e-10,
                                     atol=1e-10), "core-by-core forward against the dense W")
        what = (f"tt_linear_forward(cores of shapes {[tuple(c.shape) for c in cores]}, x of "
                f"shape {tuple(x.shape)})")
        _check_forward(student.call("tt_linear_forward", cores, x), expected, what)
    out_modes, in_modes = _draw_ttm_modes(rng, 3)
    w = torch.randn(math.prod(out_modes), math.prod(in_modes), generator=torch_rng,
                    dtype=torch.float64)
    with tl.backend_context("pytorch"):
        cores = [torch.as_tensor(c) for c in tensor_train_matrix(
            w.reshape(*out_modes, *in_modes), rank=[1, 10**6, 10**6, 1]).factors]
    oracles_agree(torch.allclose(_dense_of(cores), w, atol=1e-10), "full-rank TT-matrix")
    x = torch.randn(3, w.shape[1], generator=torch_rng, dtype=torch.float64)
    what = (f"tt_linear_forward(the full-rank TT-matrix cores of a {tuple(w.shape)} W, "
            f"shapes {[tuple(c.shape) for c in cores]})")
    _check_forward(student.call("tt_linear_forward", cores, x), x @ w.T, what)


@pytest.mark.points(1)
def test_tt_linear_forward_never_forms_w(student, rng, torch_rng):
    """A TT layer with M = N = 4^8 = 65,536 at small ranks, in float32: its W (2^32 entries,
    16 GiB) cannot be formed in the kernel's memory; the core-by-core pass takes a few million
    MACs. (float32 and one input keep the transfer small: 256 KiB each way.)"""
    d = 8
    ranks = [1] + [rng.randint(1, 3) for _ in range(d - 1)] + [1]
    cores = [torch.randn(ranks[k], 4, 4, ranks[k + 1], generator=torch_rng) * 0.5
             for k in range(d)]
    x = torch.randn(1, 4**d, generator=torch_rng)
    expected = _tt_forward_mm([core.double() for core in cores], x.double())
    what = (f"tt_linear_forward(cores of a {4**d} x {4**d} TT layer at ranks {ranks}, x of "
            f"shape {tuple(x.shape)})")
    try:
        got = student.call("tt_linear_forward", cores, x)
    except StudentError as error:
        raise AssertionError(f"{what}: apply the cores one at a time, never forming W "
                             f"({4**d} x {4**d}); {str(error)[:300]}") from None
    _check_forward(got, expected, what, rtol=1e-4, dtype=torch.float32)


def _tt_cost_formula(out_modes, in_modes, ranks) -> tuple[int, int]:
    params = macs = 0
    for k in range(len(out_modes)):
        core = ranks[k] * out_modes[k] * in_modes[k] * ranks[k + 1]
        params += core
        macs += math.prod(out_modes[:k]) * math.prod(in_modes[k + 1:]) * core
    return params, macs


@pytest.mark.points(2)
def test_tt_linear_cost(student, rng, torch_rng):
    """(parameters, MACs per input) of a TT-matrix layer, weights only, cores applied left to
    right: sum_k r_(k-1) m_k n_k r_k and sum_k (prod_(j<k) m_j)(prod_(j>k) n_j) r_(k-1) m_k n_k
    r_k, exact; the MACs agree with FlopCounterMode on the grader's torch.mm forward, the
    parameters with the cores' sizes. Six drawn layers, with unequal ranks and modes."""
    for _ in range(6):
        d = rng.randint(2, 5)
        out_modes = [rng.randint(1, 6) for _ in range(d)]
        in_modes = [rng.randint(1, 6) for _ in range(d)]
        ranks = [1] + [rng.randint(1, 8) for _ in range(d - 1)] + [1]
        expected = _tt_cost_formula(out_modes, in_modes, ranks)
        cores = [torch.randn(ranks[k], m, n, ranks[k + 1], generator=torch_rng)
                 for k, (m, n) in enumerate(zip(out_modes, in_modes, strict=True))]
        with FlopCounterMode(display=False) as counter:
            _tt_forward_mm(cores, torch.randn(1, math.prod(in_modes), generator=torch_rng))
        oracles_agree(expected == (sum(c.numel() for c in cores),
                                   counter.get_total_flops() // 2),
                      "TT cost formula against the cores' sizes and FlopCounterMode")
        got = student.call("tt_linear_cost", tuple(out_modes), tuple(in_modes), ranks)
        got = tuple(got) if isinstance(got, list | tuple) else got
        ints = isinstance(got, tuple) and all(type(v) is int for v in got)
        assert ints and _same(got, expected), (
            f"tt_linear_cost({tuple(out_modes)}, {tuple(in_modes)}, {ranks}) should be "
            f"(sum_k r_(k-1) m_k n_k r_k, sum_k (prod_(j<k) m_j)(prod_(j>k) n_j) r_(k-1) m_k "
            f"n_k r_k) = {expected}, two ints (dense: {math.prod(out_modes) * math.prod(in_modes)}"
            f"), got {got!r}"
        )


# ------------------------------------------------------------------------------------------
# 9. Challenge: ranks under a MAC budget (graded on a curve, grader.records.ChallengeResult)

HELDOUT = Path(__file__).with_name("heldout_digits.pt")
CHALLENGE_FRACTIONS = (0.25, 0.30)  # the budget: f x the shipped CNN's MACs, f drawn in here
ORIGINAL_MACS = 2_379_008  # the shipped CNN(32, 64, 128) on one 1x8x8 image (checked below)
# Full points at the grader's own run of the reference recipe (shuffling seed 0) less this.
# Held-out accuracy of the reference recipe with shuffling seeds 0-29, measured here (torch
# 2.13 CPU, one thread; 150 digits, so steps of 0.0067):
#   f = 0.25  (594,752 MACs): min 0.9800, mean 0.9949, max 1.0000; seed 0: 0.9933
#   f = 0.275 (654,227 MACs): min 0.9800, mean 0.9973, max 1.0000; seed 0: 0.9933
#   f = 0.30  (713,702 MACs): min 0.9800, mean 0.9976, max 1.0000; seed 0: 0.9933
# (and f = 0.20, below the range: min 0.9800, mean 0.9960, max 1.0000; seed 0: 1.0000).
# The range: there the one-ratio baseline without fine-tuning reaches 0.79-0.85 and the
# reference 0.99-1.00, while the reference's own ranks without fine-tuning (0.89-0.95) earn
# 52-82 % of the points; at f = 0.20-0.24 that share went up to 90 %.
# Another seed lands at most 0.02 (three digits) below seed 0's run; 0.025 keeps a solution as
# good as the reference at full points with room for float rounding of the bar.
CHALLENGE_MARGIN = 0.025
CHALLENGE_SECONDS = 60  # the student's call; the reference takes about 2 s on one thread
CHALLENGE_LAYERS = ("conv2", "conv3")  # what the reference and the baseline decompose
SPATIAL = {"conv2": 8 * 8, "conv3": 4 * 4}  # output pixels of each on a 1x8x8 image


def _flop_counter_macs(model: nn.Module) -> int:
    """MACs of one forward of a 1x8x8 image as FlopCounterMode counts them: FLOPs / 2 of the
    convolutions and matrix products (bias excluded), in eval mode."""
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 1, 8, 8))
    return int(counter.get_total_flops()) // 2


def _tucker2_macs(conv: nn.Conv2d, pixels: int, r_out: int, r_in: int) -> int:
    """MACs of a Tucker-2 block of a 3x3, stride-1, same-padded conv at ranks (r_out, r_in)."""
    kh, kw = pair(conv.kernel_size)
    return pixels * (conv.in_channels * r_in + r_in * r_out * kh * kw + r_out * conv.out_channels)


def _ranked_macs(model: nn.Module, ranks: dict[str, tuple[int, int]]) -> int:
    """MACs of `model` with the convs in `ranks` as Tucker-2 blocks at those ranks."""
    saved = sum(SPATIAL[name] * math.prod(getattr(model, name).weight.shape)
                - _tucker2_macs(getattr(model, name), SPATIAL[name], *ranks[name])
                for name in ranks)
    return ORIGINAL_MACS - saved


def _hosvd_block(conv: nn.Conv2d, r_out: int, r_in: int) -> nn.Sequential:
    """Tucker-2 of a conv by HOSVD in float32, the float path of the notebook's tucker2_conv."""
    w = conv.weight.detach()
    u_out, u_in = _leading(_unfold(w, 0), r_out), _leading(_unfold(w, 1), r_in)
    block = nn.Sequential(nn.Conv2d(conv.in_channels, r_in, 1, bias=False),
                          nn.Conv2d(r_in, r_out, conv.kernel_size, padding=conv.padding,
                                    bias=False),
                          nn.Conv2d(r_out, conv.out_channels, 1, bias=False))
    with torch.no_grad():
        block[0].weight.copy_(u_in.T[:, :, None, None])
        block[1].weight.copy_(torch.einsum("oikl,or,is->rskl", w, u_out, u_in))
        block[2].weight.copy_(u_out[:, :, None, None])
    return block


def _with_blocks(model: nn.Module, ranks: dict[str, tuple[int, int]]) -> nn.Module:
    model = copy.deepcopy(model)
    for name, (r_out, r_in) in ranks.items():
        setattr(model, name, _hosvd_block(getattr(model, name), r_out, r_in))
    return model


def _reference_ranks(model: nn.Module, budget: int) -> dict[str, tuple[int, int]]:
    """The reference's ranks: the energy ranks of conv2 and conv3 at the largest tau, among
    the energy shares of their four unfoldings, at which the model fits the budget."""
    spectra = {(name, mode): torch.linalg.svdvals(_unfold(getattr(model, name).weight
                                                          .detach().double(), mode))
               for name in CHALLENGE_LAYERS for mode in (0, 1)}
    taus = sorted({s for values in spectra.values() for s in _shares(values)}, reverse=True)
    for tau in taus:
        ranks = {name: (_energy_rank(spectra[name, 0], tau), _energy_rank(spectra[name, 1], tau))
                 for name in CHALLENGE_LAYERS}
        if _ranked_macs(model, ranks) <= budget:
            return ranks
    raise GraderBug(f"no energy ranks fit {budget} MACs")


def _uniform_ranks(model: nn.Module, budget: int) -> dict[str, tuple[int, int]]:
    """The baseline's ranks: one ratio k/32 of both convs' channels, the largest that fits."""
    for k in range(32, 0, -1):
        ranks = {name: (getattr(model, name).out_channels * k // 32,
                        getattr(model, name).in_channels * k // 32) for name in CHALLENGE_LAYERS}
        if _ranked_macs(model, ranks) <= budget:
            return ranks
    raise GraderBug(f"no uniform ratio fits {budget} MACs")


def _challenge_reference(budget: int) -> float:
    """Held-out accuracy of the grader's own run of the reference recipe at this budget:
    energy ranks, HOSVD, 3 epochs of nncourse.train at 1e-3 with seed 0, on one thread."""
    original = nncourse.load_pretrained(PRETRAINED)
    x, y, _, _ = nncourse.load_digits_split()
    with one_thread():
        model = _with_blocks(original, _reference_ranks(original, budget))
        oracles_agree(_flop_counter_macs(model) <= budget, "the reference's MACs within budget")
        model = nncourse.train(model, x, y, epochs=3, lr=1e-3, seed=0)
        return heldout_accuracy(model, HELDOUT, "the grader's reference")


def _challenge_baseline(budget: int) -> float:
    """Held-out accuracy of the baseline at this budget: one rank ratio, HOSVD, no training."""
    original = nncourse.load_pretrained(PRETRAINED)
    with one_thread():
        model = _with_blocks(original, _uniform_ranks(original, budget))
        oracles_agree(_flop_counter_macs(model) <= budget, "the baseline's MACs within budget")
        return heldout_accuracy(model, HELDOUT, "the grader's baseline")


def _factorization_problems(original: nn.Module, returned: nn.Module) -> list[str]:
    """What breaks the challenge's rules on the model's structure, in words (empty: none).
    The same named layers in order; each Conv2d (Linear) kept with its configuration or an
    nn.Sequential of Conv2d (Linear) layers only, convs of stride 1, with the layer's input
    channels (features) and an output of the original's shape; every other layer as given."""
    given = dict(original.named_children())
    if not isinstance(returned, nn.Sequential) or list(dict(returned.named_children())) != list(
            given):
        names = [name for name, _ in returned.named_children()]
        return [f"the model should be an nn.Sequential of the given layers {list(given)} in "
                f"this order, got {type(returned).__name__} of {names}"]
    problems = []
    for name, child in returned.named_children():
        mine = given[name]
        if not isinstance(mine, nn.Conv2d | nn.Linear) or not isinstance(child, nn.Sequential):
            if type(child) is not type(mine) or child.extra_repr() != mine.extra_repr():
                problems.append(f"{name} should be kept as {mine}"
                                + (" or factorized" if isinstance(mine, nn.Conv2d | nn.Linear)
                                   else "") + f", got {child}")
            continue
        kind = type(mine)
        leaves = [m for m in child.modules() if not isinstance(m, nn.Sequential)]
        wrong = sorted({type(m).__name__ for m in leaves if type(m) is not kind})
        if wrong or not leaves:
            problems.append(f"{name} may be replaced by an nn.Sequential of {kind.__name__} "
                            f"layers only, got {wrong or 'an empty one'} in it")
        elif kind is nn.Conv2d and any(m.stride != (1, 1) for m in leaves):
            problems.append(f"every conv replacing {name} should have stride 1 like {name}, got "
                            f"{[m.stride for m in leaves]}")
    return problems


def _output_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """The output shape of each top-level layer on one 1x8x8 image."""
    shapes = {}
    _forward_with_hooks(model, [
        (child, lambda module, inputs, output, name=name:
         shapes.__setitem__(name, tuple(output.shape)))
        for name, child in model.named_children()])
    return shapes


@pytest.mark.slow_check
@pytest.mark.points(6)
def test_compress_to_macs_challenge(student, rng, challenge):
    """The challenge: compress_to_macs(the shipped CNN, the kit's training images and labels,
    budget) with a budget drawn per run between 0.25 and 0.30 of the original MACs; MACs
    counted here with FlopCounterMode (FLOPs / 2, every Conv2d and Linear, bias excluded), the
    structure checked (each conv or linear kept or a Sequential of its own kind, stride 1, same
    output shapes, other layers as given), the model given left unchanged, accuracy on 150
    held-out digits; full points at the grader's own reference run less 0.025, none at the
    one-ratio baseline without fine-tuning. Two more calls at other budgets of the range must
    stay within them too."""
    fraction = round(rng.uniform(*CHALLENGE_FRACTIONS), 3)
    budget = int(fraction * ORIGINAL_MACS)
    original = nncourse.load_pretrained(PRETRAINED)
    oracles_agree(_flop_counter_macs(original) == _macs(original) == ORIGINAL_MACS,
                  "the shipped CNN's MACs")
    key = ("test_compress_to_macs_challenge", budget)
    reference = once(key + ("reference",), lambda: _challenge_reference(budget), student)
    baseline = once(key + ("baseline",), lambda: _challenge_baseline(budget), student)
    x, y, _, _ = nncourse.load_digits_split()
    what = f"compress_to_macs(the shipped CNN, x_train, y_train, budget={budget:,})"

    def result(used: float | None, score: float | None) -> ChallengeResult:
        return ChallengeResult(metric="held-out accuracy", unit="MACs", budget=float(budget),
                               used=used, score=score, bar=reference - CHALLENGE_MARGIN,
                               baseline=baseline, reference=reference)

    state = pretrained_state(PRETRAINED)
    try:
        got, (after, *_) = student.with_timeout(CHALLENGE_SECONDS).call_inspect(
            "compress_to_macs", kit_model("make_cnn", channels=CHANNELS, state_dict=state), x, y,
            budget)
        model = returned_module(got, what).rebuild()
        shapes = _output_shapes(model)
        used = _flop_counter_macs(model)
        score = heldout_accuracy(model, HELDOUT)
    except Exception:
        challenge.record(result(None, None))  # nothing measured: the leaderboard says so
        raise
    challenge.record(result(used, score))
    after = returned_module(after, "the model after compress_to_macs")
    types = {info.name: info.type for info in after.layers}
    changed = {name for name in ("conv1", "conv2", "conv3", "fc") if types.get(name) !=
               type(getattr(original, name)).__name__}
    changed |= {key.split(".")[0] for key in changed_state(state, after)}
    assert not changed, (
        f"{what} changed the layers {sorted(changed)} of the model it was given: it should be "
        f"left unchanged (work on a copy, copy.deepcopy)"
    )
    problems = _factorization_problems(original, model)
    assert not problems, f"{what}: " + "; ".join(problems)
    expected = _output_shapes(original)
    moved = {name: (shapes.get(name), shape) for name, shape in expected.items()
             if shapes.get(name) != shape}
    assert not moved, (
        f"{what}: each layer's output on a 1x8x8 image should keep the original's shape "
        f"(got, expected): {moved}"
    )
    oracles_agree(used == _macs(model), "FlopCounterMode against the per-layer MAC count")
    assert used <= budget, (
        f"{what}: the returned model needs {used:,} MACs for one 1x8x8 image (FLOPs / 2, every "
        f"Conv2d and Linear, bias excluded), over the budget of {budget:,} by {used - budget:,}"
    )
    # Two more calls at other budgets of the range (the notebook says the grader may make
    # them; only the first is scored): a search that ends on some budgets only, or stays within
    # one by luck, shows on another.
    for _ in range(2):
        other = int(round(rng.uniform(*CHALLENGE_FRACTIONS), 3) * ORIGINAL_MACS)
        call = f"compress_to_macs(the shipped CNN, x_train, y_train, budget={other:,})"
        again = returned_module(student.with_timeout(CHALLENGE_SECONDS).call(
            "compress_to_macs", kit_model("make_cnn", channels=CHANNELS, state_dict=state), x, y,
            other), call).rebuild()
        problems = _factorization_problems(original, again)
        assert not problems, f"{call}: " + "; ".join(problems)
        macs = _flop_counter_macs(again)
        assert macs <= other, (
            f"{call}: the returned model needs {macs:,} MACs, over that budget by "
            f"{macs - other:,} (the first call, at {budget:,}, is the one scored)")
