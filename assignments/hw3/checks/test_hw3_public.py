"""Public checks for homework 3: tiny fixed cases you can verify by hand.

Conventions: a conv kernel has shape (C_out, C_in, k_h, k_w); the mode-n unfolding moves mode n
to the front and reshapes row-major (tensorly's convention); "energy" is the sum of squared
singular values; parameters count weights and biases. TT cores have shape (r_(k-1), n_k, r_k)
(TT-matrix cores (r_(k-1), m_k, n_k, r_k)) with r_0 = r_d = 1.

The hidden checks test the same properties on other shapes, spectra and ranks, drawn at grading
time, and measure the compressed CNN's MACs and accuracy themselves.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import nncourse
from grader.checks import ModuleSpec, kit_model, pretrained_state, returned_module


def _with_weights(name: str, *args, state: dict, **kwargs) -> ModuleSpec:
    return ModuleSpec("layer", name, args, kwargs, state_dict=state)


def _conv_4_6(seed: int) -> tuple[ModuleSpec, dict]:
    """Conv2d(4, 6, 3, stride=2, padding=1) with fixed random weights."""
    gen = torch.Generator().manual_seed(seed)
    state = {"weight": torch.randn(6, 4, 3, 3, generator=gen),
             "bias": torch.randn(6, generator=gen)}
    return _with_weights("Conv2d", 4, 6, 3, stride=2, padding=1, state=state), state


@pytest.mark.points(1)
def test_svd_linear_public(student):
    """W = [[3, 0, 0], [0, 1, 0]] at rank 1 keeps the 3 only; the bias goes to the second layer."""
    state = {"weight": torch.tensor([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
             "bias": torch.tensor([0.5, -0.5])}
    got = student.call("svd_linear", _with_weights("Linear", 3, 2, state=state), 1)
    layers = [(info.type, info.config.get("in_features"), info.config.get("out_features"),
               info.config.get("bias")) for info in got.leaves()]
    assert layers == [("Linear", 3, 1, False), ("Linear", 1, 2, True)], (
        f"expected Linear(3, 1, bias=False) then Linear(1, 2), got {layers}"
    )
    w1, w2 = got.state_dict["0.weight"], got.state_dict["1.weight"]
    product = (w2 @ w1).tolist()
    assert torch.allclose(w2 @ w1, torch.tensor([[3.0, 0, 0], [0, 0, 0]])), (
        f"the rank-1 approximation of [[3, 0, 0], [0, 1, 0]] is [[3, 0, 0], [0, 0, 0]], "
        f"got {product}"
    )
    assert torch.equal(got.state_dict["1.bias"], state["bias"]), "the second layer keeps the bias"


@pytest.mark.points(1)
def test_svd_rank_for_energy_public(student):
    """Singular values 3, 2, 1: energies 9, 4, 1 of 14."""
    D = torch.diag(torch.tensor([3.0, 2.0, 1.0]))
    for tau, expected in [(0.5, 1), (0.9, 2), (0.95, 3)]:
        got = student.call("svd_rank_for_energy", D, tau)
        assert got == expected, (
            f"svd_rank_for_energy(diag(3, 2, 1), {tau}) should be {expected} (shares of the "
            f"squared singular values 9/14, 13/14, 14/14), got {got}"
        )


@pytest.mark.points(1)
def test_unfold_public(student):
    """T = arange(24).reshape(2, 3, 4): unfold(T, 1)[1] is T[:, 1, :] flattened."""
    T = torch.arange(24.0).reshape(2, 3, 4)
    got = student.call("unfold", T, 1)
    assert tuple(got.shape) == (3, 8), f"unfold(T, 1) should have shape (3, 8), got {got.shape}"
    assert got[1].tolist() == [4, 5, 6, 7, 16, 17, 18, 19], (
        f"row 1 of unfold(T, 1) should be [4, 5, 6, 7, 16, 17, 18, 19], got {got[1].tolist()}"
    )


@pytest.mark.points(1)
def test_hosvd_tucker2_public(student):
    """A kernel of multilinear rank (1, 1) is rebuilt exactly at ranks (1, 1)."""
    a, b = torch.tensor([1.0, 2.0, 2.0]), torch.tensor([3.0, 4.0])
    g = torch.tensor([[1.0, -1.0], [0.5, 2.0]])
    W = torch.einsum("o,i,kl->oikl", a, b, g)
    core, U_out, U_in = student.call("hosvd_tucker2", W, 1, 1)
    shapes = (tuple(core.shape), tuple(U_out.shape), tuple(U_in.shape))
    assert shapes == ((1, 1, 2, 2), (3, 1), (2, 1)), (
        f"shapes should be core (1, 1, 2, 2), U_out (3, 1), U_in (2, 1), got {shapes}"
    )
    rebuilt = torch.einsum("rskl,or,is->oikl", core, U_out, U_in)
    assert torch.allclose(rebuilt, W, atol=1e-5), "core x_0 U_out x_1 U_in should rebuild W"
    assert torch.allclose(U_out.T @ U_out, torch.ones(1, 1)), "U_out should have unit columns"


@pytest.mark.points(1)
def test_tucker2_conv_public(student):
    """Conv2d(4, 6, 3, stride=2, padding=1) at ranks (3, 2): 1x1 4->2, 3x3 2->3 (stride 2,
    padding 1), 1x1 3->6 with the bias."""
    spec, _ = _conv_4_6(0)
    got = student.call("tucker2_conv", spec, 3, 2)
    layers = [(c["in_channels"], c["out_channels"], c["kernel_size"], c["stride"], c["padding"],
               c["bias"]) for c in (info.config for info in got.leaves())]
    expected = [(4, 2, (1, 1), (1, 1), (0, 0), False), (2, 3, (3, 3), (2, 2), (1, 1), False),
                (3, 6, (1, 1), (1, 1), (0, 0), True)]
    assert layers == expected, (
        f"expected (in, out, kernel, stride, padding, bias) = {expected}, got {layers}"
    )


@pytest.mark.points(1)
def test_tucker2_conv_full_rank_public(student):
    """At full ranks (6, 4) the block computes exactly the original conv."""
    spec, state = _conv_4_6(1)
    block = student.call("tucker2_conv", spec, 6, 4).rebuild()
    x = torch.randn(1, 4, 7, 7, generator=torch.Generator().manual_seed(1))
    expected = F.conv2d(x, state["weight"], state["bias"], stride=2, padding=1)
    with torch.no_grad():
        assert torch.allclose(block(x), expected, atol=1e-4), (
            "tucker2_conv at full ranks should give the same outputs as the original conv"
        )


@pytest.mark.points(1)
def test_cp_decompose_public(student):
    """A rank-1 kernel is rebuilt by its rank-1 CP factors."""
    W = torch.einsum("o,i,h,w->oihw", torch.tensor([1.0, -2.0, 0.5]), torch.tensor([2.0, 1.0]),
                     torch.tensor([1.0, 0.5, -1.0]), torch.tensor([1.0, 3.0]))
    factors = student.call("cp_decompose", W, 1)
    shapes = [tuple(f.shape) for f in factors]
    assert shapes == [(3, 1), (2, 1), (3, 1), (2, 1)], f"factor shapes, got {shapes}"
    rebuilt = torch.einsum("or,ir,hr,wr->oihw", *factors)
    assert torch.allclose(rebuilt, W, atol=1e-3), "the CP factors should rebuild the kernel"


@pytest.mark.points(1)
def test_cp_conv_public(student):
    """Conv2d(4, 6, 3, stride=2, padding=1) at rank 2: 1x1 4->2, (3,1) and (1,3) depth-wise with
    the stride and padding split by axis, 1x1 2->6 with the bias."""
    spec, _ = _conv_4_6(2)
    got = student.call("cp_conv", spec, 2, n_iter_max=20)
    layers = [(c["in_channels"], c["out_channels"], c["kernel_size"], c["stride"], c["padding"],
               c["groups"], c["bias"]) for c in (info.config for info in got.leaves())]
    expected = [(4, 2, (1, 1), (1, 1), (0, 0), 1, False), (2, 2, (3, 1), (2, 1), (1, 0), 2, False),
                (2, 2, (1, 3), (1, 2), (0, 1), 2, False), (2, 6, (1, 1), (1, 1), (0, 0), 1, True)]
    assert layers == expected, (
        f"expected (in, out, kernel, stride, padding, groups, bias) = {expected}, got {layers}"
    )


@pytest.mark.points(1)
def test_tucker2_ranks_public(student):
    """Unfoldings of W are diag(3, 1) padded with zeros: energies 9 and 1."""
    W = torch.zeros(3, 2, 1, 1)
    W[0, 0], W[1, 1] = 3.0, 1.0
    for tau, expected in [(0.8, (1, 1)), (0.95, (2, 2))]:
        got = student.call("tucker2_ranks", W, tau)
        assert tuple(got) == expected, f"tucker2_ranks(W, {tau}) should be {expected}, got {got}"


@pytest.mark.points(1)
def test_tucker2_rank_for_budget_public(student):
    """C_out = C_in = 4, k = 3, rate 2: 4R + 9R^2 + 4R <= 72 holds up to R = 2 (52; R=3: 105)."""
    got = student.call("tucker2_rank_for_budget", 4, 4, 3, 2.0)
    assert got == 2, f"tucker2_rank_for_budget(4, 4, 3, 2.0) should be 2, got {got}"


@pytest.mark.points(1)
def test_compress_cnn_public(student):
    """make_cnn((4, 8, 8)): conv2 and conv3 become three-conv Sequentials; the input is kept."""
    model = kit_model("make_cnn", channels=(4, 8, 8))
    got, (after, _) = student.call_inspect("compress_cnn", model, 0.9)
    names = [info.name for info in got.layers if info.type == "Conv2d"]
    expected = ["conv1", "conv2.0", "conv2.1", "conv2.2", "conv3.0", "conv3.1", "conv3.2"]
    assert names == expected, f"the compressed model's convs should be {expected}, got {names}"
    kept = {info.name: info.type for info in after.layers}
    assert kept["conv2"] == "Conv2d", "compress_cnn must not change the model it was given"


@pytest.mark.points(1)
def test_tt_svd_public(student):
    """A rank-one tensor a o b o c: TT ranks (1, 1, 1, 1), cores (1, 2, 1), (1, 3, 1), (1, 2, 1),
    and the cores rebuild it."""
    a, b, c = (torch.tensor(v, dtype=torch.float64) for v in ([1, 2], [1, -1, 3], [2, 0.5]))
    A = torch.einsum("i,j,k->ijk", a, b, c)
    cores = student.call("tt_svd", A, 0.1)
    shapes = [tuple(core.shape) for core in cores]
    assert shapes == [(1, 2, 1), (1, 3, 1), (1, 2, 1)], (
        f"the cores of a rank-one 2x3x2 tensor should have shapes (1, 2, 1), (1, 3, 1), "
        f"(1, 2, 1), got {shapes}"
    )
    rebuilt = torch.einsum("aib,bjc,ckd->ijk", *cores)
    assert torch.allclose(rebuilt, A), "the cores should rebuild the tensor"


@pytest.mark.points(1)
def test_tt_to_tensor_public(student):
    """Cores [[[1], [2]]] (1, 2, 1) and [[[3], [4], [5]]] (1, 3, 1): the outer product of
    (1, 2) and (3, 4, 5)."""
    cores = [torch.tensor([[[1.0], [2.0]]]), torch.tensor([[[3.0], [4.0], [5.0]]])]
    got = student.call("tt_to_tensor", cores)
    assert tuple(got.shape) == (2, 3), f"the full tensor should have shape (2, 3), got {got.shape}"
    assert got.tolist() == [[3, 4, 5], [6, 8, 10]], (
        f"the full tensor should be [[3, 4, 5], [6, 8, 10]], got {got.tolist()}"
    )


@pytest.mark.points(1)
def test_tt_matrix_public(student):
    """A 6 x 8 matrix with modes (2, 3) x (4, 2) at ranks [1, 100, 1]: the rank is lowered to
    min(1 * 2 * 4, 3 * 2) = 6, cores (1, 2, 4, 6) and (6, 3, 2, 1), and they hold W exactly."""
    W = torch.arange(48, dtype=torch.float64).reshape(6, 8) % 7
    cores = student.call("tt_matrix", W, (2, 3), (4, 2), [1, 100, 1])
    shapes = [tuple(core.shape) for core in cores]
    assert shapes == [(1, 2, 4, 6), (6, 3, 2, 1)], (
        f"the cores should have shapes (1, 2, 4, 6) and (6, 3, 2, 1), got {shapes}"
    )
    rebuilt = torch.einsum("aijb,bklc->ikjl", *cores).reshape(6, 8)
    assert torch.allclose(rebuilt, W), "at full rank the cores should rebuild W exactly"


@pytest.mark.points(1)
def test_tt_linear_forward_public(student):
    """The 4 x 4 identity as TT cores I_2 (1, 2, 2, 1) twice: the layer returns its input."""
    eye = torch.eye(2).reshape(1, 2, 2, 1)
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, -1.0, 5.0, 2.0]])
    got = student.call("tt_linear_forward", [eye, eye], x)
    assert torch.allclose(got, x), f"the identity layer should return its input, got {got}"


@pytest.mark.points(1)
def test_tt_linear_cost_public(student):
    """m = (4, 4, 8), n = (8, 4, 4), ranks (1, 8, 8, 1): 256 + 1024 + 256 = 1,536 weights and
    16 * 256 + 16 * 1024 + 16 * 256 = 24,576 MACs (the dense layer: 16,384 of each)."""
    got = student.call("tt_linear_cost", (4, 4, 8), (8, 4, 4), [1, 8, 8, 1])
    ints = isinstance(got, tuple | list) and [type(v) for v in got] == [int, int]
    assert ints and tuple(got) == (1536, 24576), (
        f"tt_linear_cost((4, 4, 8), (8, 4, 4), [1, 8, 8, 1]) should be (1536, 24576), two ints, "
        f"got {got!r}"
    )


@pytest.mark.points(1)
def test_compress_to_macs_public(student):
    """The challenge at a quarter of the shipped CNN's 2,379,008 MACs (594,752): the same
    named layers in order, each conv or linear kept or a Sequential of its own kind, and at
    most 594,752 MACs (FlopCounterMode: FLOPs / 2, every Conv2d and Linear, bias excluded).
    The hidden check draws the budget and measures the accuracy on digits the kit lacks."""
    budget = 594_752
    x, y, _, _ = nncourse.load_digits_split()
    state = pretrained_state("cnn_32_64_128")
    got = student.with_timeout(60).call(
        "compress_to_macs", kit_model("make_cnn", channels=(32, 64, 128), state_dict=state), x,
        y, budget)
    model = returned_module(got, "compress_to_macs").rebuild().eval()
    names = [name for name, _ in model.named_children()]
    expected = ["conv1", "bn1", "relu1", "conv2", "bn2", "relu2", "pool", "conv3", "bn3", "relu3",
                "gap", "flatten", "fc"]
    assert names == expected, f"the model should keep the layers {expected}, got {names}"
    for name, kind in (("conv1", "Conv2d"), ("conv2", "Conv2d"), ("conv3", "Conv2d"),
                       ("fc", "Linear")):
        kinds = {type(m).__name__ for m in model.get_submodule(name).modules()} - {"Sequential"}
        assert kinds == {kind}, f"{name} should hold {kind} layers only, got {sorted(kinds)}"
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        logits = model(torch.zeros(1, 1, 8, 8))
    assert tuple(logits.shape) == (1, 10), (
        f"one image should give (1, 10) logits, got {tuple(logits.shape)}")
    macs = counter.get_total_flops() // 2
    assert macs <= budget, f"{macs:,} MACs, over the budget of {budget:,}"
