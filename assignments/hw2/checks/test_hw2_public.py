"""Public checks for homework 2: tiny fixed cases you can verify by hand.

Conventions: sparsity = fraction of zero entries; a model's sparsity counts the weights of its
Conv2d and Linear layers only; magnitude pruning to sparsity s zeros the round(s * n) entries of
smallest magnitude. MAC = multiply-accumulates of Conv2d and Linear layers, bias excluded.

The hidden checks test the same properties on other tensors, models and sparsities, drawn at
grading time, and measure the accuracy of the models your functions produce themselves.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import nncourse
from grader.checks import ModuleSpec, ReturnedModule, kit_model, layer, seq


def _with_state(spec: ModuleSpec, **state: list) -> ModuleSpec:
    """The spec with these weights loaded (keys as in state_dict, dots written as __)."""
    return dataclasses.replace(
        spec, state_dict={k.replace("__", "."): torch.tensor(v) for k, v in state.items()})


def _two_linears() -> ModuleSpec:
    return _with_state(seq(layer("Linear", 2, 2, bias=False), layer("Linear", 2, 3, bias=False)),
                       **{"0__weight": [[0.1, -0.6], [0.3, 0.8]],
                          "1__weight": [[0.2, -0.7], [0.05, 0.4], [-0.9, 0.5]]})


def _toy_state() -> dict[str, torch.Tensor]:
    """make_cnn((3, 4, 5)): conv3 reads channel 1 of conv2 with weights 1, channel 3 with 2,
    the others with 0; bn1's gamma is (0.5, -2, 1)."""
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, value in nncourse.make_cnn((3, 4, 5)).state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = value.clone()
        elif key.endswith("running_var"):
            state[key] = torch.rand(value.shape, generator=gen) + 0.5
        else:
            state[key] = torch.randn(value.shape, generator=gen) * 0.5
    state["conv3.weight"] = torch.zeros(5, 4, 3, 3)
    state["conv3.weight"][:, 1] = 1.0
    state["conv3.weight"][:, 3] = 2.0
    state["bn1.weight"] = torch.tensor([0.5, -2.0, 1.0])
    return state


def _toy() -> ModuleSpec:
    return kit_model("make_cnn", channels=(3, 4, 5), state_dict=_toy_state())


def _out_channels(model: ReturnedModule) -> list:
    configs = {info.name: info.config for info in model.layers}
    return [configs.get(name, {}).get("out_channels") for name in ("conv1", "conv2", "conv3")]


@pytest.mark.points(1)
def test_magnitude_prune_public(student):
    """round(0.5 * 6) = 3 zeros: the magnitudes 0.1, 0.2, 0.3; pruned in place."""
    w = torch.tensor([[0.4, -0.9], [0.1, -0.3], [0.7, 0.2]])
    mask, (after, _) = student.call_inspect("magnitude_prune_", w.clone(), 0.5)
    expected = [[True, True], [False, False], [True, False]]
    assert isinstance(mask, torch.Tensor) and mask.dtype == torch.bool, (
        f"magnitude_prune_ should return a bool tensor, got {mask!r}"
    )
    assert mask.tolist() == expected, f"the keep-mask should be {expected}, got {mask.tolist()}"
    assert torch.equal(after, w * mask), "the tensor itself should be pruned (in place)"
    got = student.call("magnitude_prune_", w.clone(), 0.0)
    assert got.all(), "sparsity 0 keeps every entry"
    got = student.call("magnitude_prune_", w.clone(), 1.0)
    assert not got.any(), "sparsity 1 prunes every entry"


@pytest.mark.points(1)
def test_model_sparsity_public(student):
    """2 zero conv weights of 8 and 6 zero Linear weights of 6: 8 / 14 (the bias does not count)."""
    spec = _with_state(seq(layer("Conv2d", 1, 2, 2, bias=False), layer("Flatten"),
                           layer("Linear", 2, 3)),
                       **{"0__weight": [[[[0.0, 0.0], [1.0, 1.0]]], [[[1.0, 1.0], [1.0, 1.0]]]],
                          "2__weight": [[0.0, 0.0]] * 3, "2__bias": [1.0, 1.0, 1.0]})
    got = student.call("model_sparsity", spec)
    assert isinstance(got, float) and math.isclose(got, 8 / 14), f"expected 8/14, got {got}"


def _pruner_after_a_step(model, masks):
    """Run in your kernel: the first layer's weight right after MaskedPruner(model, masks), and
    after every weight of it moved by 1 (as an optimizer step would) and apply() ran."""
    import torch

    pruner = MaskedPruner(model, masks)  # noqa: F821 - the notebook's class
    after_init = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    pruner.apply()
    return after_init, model[0].weight.detach().clone()


@pytest.mark.points(1)
def test_masked_pruner_public(student):
    """The masks are applied when the pruner is created, and again by apply()."""
    spec = _with_state(seq(layer("Linear", 3, 2, bias=False)),
                       **{"0__weight": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]})
    masks = {"0.weight": torch.tensor([[True, False, True], [False, True, False]])}
    after_init, after_apply = student.drive(_pruner_after_a_step, spec, masks)
    assert after_init.tolist() == [[1.0, 0.0, 3.0], [0.0, 5.0, 0.0]], (
        f"MaskedPruner(model, masks) should zero the masked-out weights at once, got "
        f"{after_init.tolist()}"
    )
    assert after_apply.tolist() == [[2.0, 0.0, 4.0], [0.0, 6.0, 0.0]], (
        f"after every weight moved by +1, apply() should zero the same entries again, got "
        f"{after_apply.tolist()}"
    )


@pytest.mark.points(1)
def test_fine_tune_sparse_public(student):
    """One epoch on 128 images: the pruned entries of conv2.weight stay exactly zero."""
    x, y, _, _ = nncourse.load_digits_split()
    mask = torch.arange(8 * 4 * 9).reshape(8, 4, 3, 3) % 3 == 0  # keep a third
    model = kit_model("make_cnn", channels=(4, 8, 8))
    got = student.with_timeout(90).call("fine_tune_sparse", model, {"conv2.weight": mask},
                                        x[:128], y[:128], epochs=1)
    assert isinstance(got, ReturnedModule), f"fine_tune_sparse should return the model, got {got!r}"
    regrown = int((got.state_dict["conv2.weight"][~mask] != 0).sum())
    assert regrown == 0, f"{regrown} pruned weights of conv2 came back: re-apply the masks"


@pytest.mark.points(1)
def test_sensitivity_scan_public(student):
    """fc pruned to sparsity 0 gives the dense accuracy; the model is left as it was."""
    dense = nncourse.load_pretrained("cnn_16_32_64")
    _, _, x, y = nncourse.load_digits_split()
    x, y = x[:60], y[:60]
    state = dense.state_dict()
    spec = kit_model("make_cnn", channels=(16, 32, 64), state_dict=state)
    got, (after, *_) = student.call_inspect("sensitivity_scan", spec, ["fc.weight"], [0.0], x, y)
    expected = nncourse.evaluate(dense, x, y)
    assert isinstance(got, dict) and list(got) == ["fc.weight"] and len(got["fc.weight"]) == 1, (
        f"expected {{'fc.weight': [accuracy]}}, got {got!r}"
    )
    assert abs(got["fc.weight"][0] - expected) < 1e-9, (
        f"at sparsity 0 the accuracy should be the dense one, {expected:.4f}, got "
        f"{got['fc.weight'][0]}"
    )
    assert all(torch.equal(after.state_dict[k], v) for k, v in state.items()), (
        "sensitivity_scan must leave the model's weights as they were"
    )


@pytest.mark.points(1)
def test_global_magnitude_prune_public(student):
    """The 5 smallest magnitudes of the 10 weights of both layers (|w| <= 0.4) are pruned."""
    masks = student.call("global_magnitude_prune", _two_linears(), 0.5, exclude=())
    assert isinstance(masks, dict) and set(masks) == {"0.weight", "1.weight"}, (
        f"expected masks for '0.weight' and '1.weight', got {masks!r}"
    )
    assert masks["0.weight"].tolist() == [[False, True], [False, True]], masks["0.weight"]
    assert masks["1.weight"].tolist() == [[False, True], [False, False], [True, True]], (
        masks["1.weight"]
    )


@pytest.mark.points(1)
def test_global_prune_with_torch_public(student):
    """Same zeros as by hand; no weight_orig / weight_mask left in the state_dict."""
    _, (after, *_) = student.call_inspect("global_prune_with_torch", _two_linears(), 0.5,
                                          exclude=("0.weight",))
    assert sorted(after.state_dict) == ["0.weight", "1.weight"], (
        f"after prune.remove only '0.weight' and '1.weight' remain, got {sorted(after.state_dict)}"
    )
    # with layer 0 excluded, 3 of layer 1's 6 weights go: 0.05, 0.2, 0.4
    assert (after.state_dict["1.weight"] != 0).tolist() == [[False, True], [False, False],
                                                            [True, True]]
    assert torch.equal(after.state_dict["0.weight"], torch.tensor([[0.1, -0.6], [0.3, 0.8]])), (
        "the excluded layer must not change"
    )


@pytest.mark.points(1)
def test_recalibrate_bn_public(student):
    """Channel 0 sees 1 and 3, channel 1 sees 2 and 6: means (2, 4), unbiased variances (2, 8)."""
    z = torch.tensor([[1.0, 2.0], [3.0, 6.0]]).reshape(2, 2, 1, 1)
    _, (after, _) = student.call_inspect("recalibrate_bn", layer("BatchNorm2d", 2), z)
    assert torch.allclose(after.state_dict["running_mean"], torch.tensor([2.0, 4.0])), (
        f"running_mean should be (2, 4), got {after.state_dict['running_mean'].tolist()}"
    )
    assert torch.allclose(after.state_dict["running_var"], torch.tensor([2.0, 8.0])), (
        f"running_var should be (2, 8), got {after.state_dict['running_var'].tolist()}"
    )
    assert after.layers[0].config.get("momentum") == 0.1, "restore the momentum (0.1)"
    assert not after.training[""], "the layer was in eval mode: put it back"


@pytest.mark.points(1)
def test_channel_importance_public(student):
    """conv3 reads conv2's channels 1 and 3 with norms sqrt(45) and sqrt(180); |gamma| of bn1."""
    got = student.call("channel_importance", _toy(), "conv2", "l2")
    expected = torch.tensor([0.0, 45**0.5, 0.0, 180**0.5])
    assert isinstance(got, torch.Tensor) and torch.allclose(got, expected), (
        f"expected {expected.tolist()}, got {got!r}"
    )
    got = student.call("channel_importance", _toy(), "conv1", "bn_gamma")
    assert torch.allclose(got, torch.tensor([0.5, 2.0, 1.0])), f"expected (0.5, 2, 1), got {got}"


@pytest.mark.points(1)
def test_select_channels_public(student):
    """keep conv2's channels 3 and 1, in that order: conv2, bn2 and conv3 sliced."""
    state = _toy_state()
    got = student.call("select_channels", _toy(), {"conv2": torch.tensor([3, 1])})
    assert isinstance(got, ReturnedModule), f"select_channels should return a model, got {got!r}"
    assert _out_channels(got) == [3, 2, 5], (
        f"out_channels of conv1, conv2, conv3 should be [3, 2, 5], got {_out_channels(got)}"
    )
    for key, want in [("conv2.weight", state["conv2.weight"][[3, 1]]),
                      ("bn2.running_mean", state["bn2.running_mean"][[3, 1]]),
                      ("conv3.weight", state["conv3.weight"][:, [3, 1]])]:
        assert torch.equal(got.state_dict[key], want), f"{key} is not sliced to channels [3, 1]"


@pytest.mark.points(1)
def test_channel_prune_public(student):
    """{"conv2": 0.5} keeps channels 1 and 3 of conv2; 0.6 everywhere keeps 1, 2, 2 channels."""
    state = _toy_state()
    got = student.call("channel_prune", _toy(), {"conv2": 0.5}, "l2")
    assert _out_channels(got) == [3, 2, 5], (
        f"out_channels of conv1, conv2, conv3 should be [3, 2, 5], got {_out_channels(got)}"
    )
    assert torch.equal(got.state_dict["conv2.weight"], state["conv2.weight"][[1, 3]]), (
        "conv2 should keep its channels 1 and 3 (the ones conv3 reads), in that order"
    )
    got = student.call("channel_prune", _toy(), 0.6, "bn_gamma")
    assert _out_channels(got) == [1, 2, 2], (
        f"round(0.4 * C) of 3, 4, 5 channels is 1, 2, 2; got {_out_channels(got)}"
    )


@pytest.mark.points(1)
def test_sort_channels_public(student):
    """Sorted by l2 importance, conv2's channels 3 and 1 come first; the outputs do not change."""
    state = _toy_state()
    got = student.call("sort_channels", _toy(), "l2")
    assert isinstance(got, ReturnedModule), f"sort_channels should return a model, got {got!r}"
    assert torch.equal(got.state_dict["conv2.weight"][:2], state["conv2.weight"][[3, 1]]), (
        "conv2's most important channels (3, then 1) should come first"
    )
    original = nncourse.make_cnn((3, 4, 5))
    original.load_state_dict(state)
    x = nncourse.load_digits_split()[2][:8]
    with torch.no_grad():
        difference = (got.rebuild().eval()(x) - original.eval()(x)).abs().max().item()
    assert difference < 1e-4, f"sorting must not change the outputs (difference {difference:.2e})"


@pytest.mark.points(1)
def test_sparse_macs_public(student):
    """Dense: conv 2*2*2*9 = 72 MACs, Linear 8*3 = 24; with half of each layer's weights zero,
    36 + 12 = 48."""
    conv = [[[[1.0] * 3] * 3], [[[0.0] * 3] * 3]]  # the second filter is empty
    spec = _with_state(seq(layer("Conv2d", 1, 2, 3, bias=False), layer("Flatten"),
                           layer("Linear", 8, 3, bias=False)),
                       **{"0__weight": conv, "2__weight": [[0.0] * 4 + [1.0] * 4] * 3})
    got = student.call("sparse_macs", spec, (1, 1, 4, 4))
    assert got == 48, f"expected 36 + 12 = 48 MACs, got {got}"


@pytest.mark.points(1)
def test_prune_to_budget_public(student):
    """Challenge, budget 3,000: the pretrained CNN comes back with the same state_dict keys,
    shapes and dtypes, and at most 3,000 nonzero weights in conv1, conv2, conv3 and fc (biases
    and BatchNorm not counted). The grader draws the budget, and measures the accuracy on
    images it holds back."""
    budget = 3_000
    given = nncourse.load_pretrained("cnn_32_64_128").state_dict()
    x, y, _, _ = nncourse.load_digits_split()
    model = kit_model("make_cnn", channels=(32, 64, 128),
                      state_dict={k: v.clone() for k, v in given.items()})
    got = student.with_timeout(60).call("prune_to_budget", model, x, y, budget)
    assert isinstance(got, ReturnedModule), f"prune_to_budget should return the model, got {got!r}"
    state = got.state_dict
    missing, extra = sorted(set(given) - set(state)), sorted(set(state) - set(given))
    assert not missing and not extra, (
        f"keep the architecture: the state_dict keys should be those of the model given; "
        f"missing {missing[:3]}, extra {extra[:3]}")
    wrong = [k for k, v in given.items() if (state[k].shape, state[k].dtype) != (v.shape, v.dtype)]
    assert not wrong, f"keep every tensor's shape and dtype; these changed: {wrong[:3]}"
    used = sum(int(torch.count_nonzero(state[k]))
               for k in ("conv1.weight", "conv2.weight", "conv3.weight", "fc.weight"))
    assert used <= budget, f"{used:,} nonzero weights, over the budget of {budget:,}"
