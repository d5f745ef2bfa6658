"""Public checks for homework 6: tiny fixed cases you can verify by hand.

Conventions: kd_loss = alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) averaged over
the rows, plus (1 - alpha) * cross-entropy over the labelled rows (label -1 = unlabelled).
hint_loss = mean over every element of (regressor(student features) - teacher features)^2.
Saved-activation bytes count each distinct storage autograd saves once, parameters excluded.

The hidden checks test the same properties on other inputs, drawn at grading time, and measure
the accuracy of the models your functions return themselves, on the test split.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from grader.checks import ReturnedModule, kit_model, layer, seq

S = torch.tensor([[0.0, 0.0]])  # p_s = (1/2, 1/2)
T3 = torch.tensor([[math.log(3.0), 0.0]])  # p_t = (3/4, 1/4) at T = 1
KL_BY_HAND = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)


def _float(value) -> float:
    return float(value) if isinstance(value, torch.Tensor | int | float) else math.nan


@pytest.mark.points(1)
def test_kd_loss_public(student):
    """T = 1, alpha = 1: KL(p_t || p_s); alpha = 0: cross-entropy."""
    got = _float(student.call("kd_loss", S, T3, None, T=1.0, alpha=1.0))
    assert math.isclose(got, KL_BY_HAND, rel_tol=1e-5), (
        f"KL((3/4, 1/4) || (1/2, 1/2)) = {KL_BY_HAND:.6f} (the teacher is the target), got {got}"
    )
    got = _float(student.call("kd_loss", S, T3, torch.tensor([1]), T=4.0, alpha=0.0))
    assert math.isclose(got, math.log(2), rel_tol=1e-5), (
        f"alpha=0 is plain cross-entropy: ln 2 = {math.log(2):.6f} for equal logits, got {got}"
    )


@pytest.mark.points(1)
def test_kd_loss_temperature_public(student):
    """T = 2 softens (ln 9, 0) to (3/4, 1/4); the T^2 factor makes the loss 4 x the KL."""
    got = _float(student.call("kd_loss", S, torch.tensor([[math.log(9.0), 0.0]]), None,
                              T=2.0, alpha=1.0))
    assert math.isclose(got, 4 * KL_BY_HAND, rel_tol=1e-5), (
        f"T^2 * KL = 4 * {KL_BY_HAND:.6f} = {4 * KL_BY_HAND:.6f}, got {got}"
    )


@pytest.mark.points(1)
def test_kd_loss_unlabelled_public(student):
    """Rows labelled -1 do not enter the cross-entropy; the KL term is a mean over rows."""
    s = torch.tensor([[0.0, 0.0], [5.0, 0.0]])
    got = _float(student.call("kd_loss", s, T3.repeat(2, 1), torch.tensor([1, -1]), T=1.0,
                              alpha=0.0))
    assert math.isclose(got, math.log(2), rel_tol=1e-5), (
        f"only the first row is labelled: cross-entropy ln 2 = {math.log(2):.6f}, got {got}"
    )
    got = _float(student.call("kd_loss", S.repeat(2, 1), T3.repeat(2, 1), None, T=1.0,
                              alpha=1.0))
    assert math.isclose(got, KL_BY_HAND, rel_tol=1e-5), (
        f"two identical rows: the mean KL per row is {KL_BY_HAND:.6f} (reduction='batchmean'), "
        f"got {got}"
    )


def _tiny_class():
    """An MLP 64-8-10 to train (its spec and first weights), 32 images, a teacher that is sure
    of every label, and 8 labels kept (the others -1)."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10))
    init = {k: v.clone() for k, v in mlp.state_dict().items()}
    x = torch.rand(32, 1, 8, 8)
    y = torch.arange(32) % 10
    teacher_logits = 5.0 * nn.functional.one_hot(y, 10).float()
    labels = torch.where(torch.arange(32) < 8, y, -1)
    spec = dataclasses.replace(
        seq(layer("Flatten"), layer("Linear", 64, 8), layer("ReLU"), layer("Linear", 8, 10),
            training=True), state_dict=init)
    return spec, init, x, teacher_logits, labels


def _trained(got, init, function: str) -> None:
    assert isinstance(got, ReturnedModule), f"{function} should return the student, got {got!r}"
    assert set(got.state_dict) == set(init), "the returned student should have the same layers"
    assert any(not torch.equal(got.state_dict[k], init[k]) for k in init), (
        f"{function} should train the student: its weights did not change"
    )
    assert not any(got.training.values()), f"{function} should return the student in eval mode"


@pytest.mark.points(1)
def test_distill_public(student):
    """distill returns the trained student (same layers, new weights) in eval mode."""
    spec, init, x, teacher_logits, labels = _tiny_class()
    _trained(student.call("distill", spec, teacher_logits, x, labels, epochs=2), init, "distill")


@pytest.mark.points(1)
def test_make_regressor_public(student):
    """Vectors of 16 -> 64 values: Linear(16, 64); maps 8x4x4 -> 32x4x4: a 1x1 Conv2d, with
    8 * 32 + 32 = 288 parameters."""
    got = student.call("make_regressor", (16,), (64,))
    assert isinstance(got, ReturnedModule), f"make_regressor should return a module, got {got!r}"
    out = got.rebuild()(torch.zeros(2, 16))
    assert out.shape == (2, 64), f"Linear(16, 64) maps (2, 16) to (2, 64), got {tuple(out.shape)}"
    got = student.call("make_regressor", (8, 4, 4), (32, 4, 4))
    assert isinstance(got, ReturnedModule), f"make_regressor should return a module, got {got!r}"
    model = got.rebuild()
    out = model(torch.zeros(2, 8, 4, 4))
    assert out.shape == (2, 32, 4, 4), f"expected an output of shape (2, 32, 4, 4), got {out.shape}"
    count = sum(p.numel() for p in model.parameters())
    assert count == 288, f"a 1x1 Conv2d(8, 32) has 8 * 32 + 32 = 288 parameters, got {count}"


@pytest.mark.points(1)
def test_hint_loss_public(student):
    """r(v) = 2 v with v = (1, 2) and u = (1, 1): squared errors 1 and 9, mean 5."""
    double = dataclasses.replace(layer("Linear", 1, 1), state_dict={
        "weight": torch.tensor([[2.0]]), "bias": torch.tensor([0.0])})
    got = _float(student.call("hint_loss", torch.tensor([[1.0], [2.0]]),
                              torch.tensor([[1.0], [1.0]]), double))
    assert math.isclose(got, 5.0, rel_tol=1e-6), f"((2 - 1)^2 + (4 - 1)^2) / 2 = 5, got {got}"


@pytest.mark.points(1)
def test_distill_with_hints_public(student):
    """distill_with_hints returns the trained student (same layers, new weights) in eval mode."""
    spec, init, x, teacher_logits, labels = _tiny_class()
    teacher_features = torch.rand(32, 4)
    got = student.call("distill_with_hints", spec, layer("Linear", 8, 4), teacher_logits,
                       teacher_features, x, labels, "1", epochs=2)
    _trained(got, init, "distill_with_hints")


@pytest.mark.points(1)
def test_accumulated_grads_public(student):
    """Two micro-batches of 2 rows: the same gradients as the batch of 4."""
    torch.manual_seed(0)
    lin = nn.Linear(3, 2)
    x = torch.arange(12.0).reshape(4, 3) / 10
    y = torch.tensor([0, 1, 1, 0])
    nn.functional.cross_entropy(lin(x), y).backward()
    spec = dataclasses.replace(layer("Linear", 3, 2), state_dict=lin.state_dict())
    got = student.call("accumulated_grads", spec, x, y, 2)
    assert isinstance(got, dict) and set(got) == {"weight", "bias"}, (
        f"expected {{'weight': ..., 'bias': ...}}, got {got!r}"
    )
    for name, p in lin.named_parameters():
        assert torch.allclose(got[name], p.grad, atol=1e-6), (
            f"the accumulated gradient of {name} should equal the full-batch one "
            f"(divide each micro-batch's mean loss by 2): expected {p.grad}, got {got[name]}"
        )


def _adam_state_after_a_step(model):
    """Run in your kernel: optimizer_state_bytes of Adam over the model after one step."""
    import torch

    opt = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    return optimizer_state_bytes(opt)  # noqa: F821 - the notebook's function


@pytest.mark.points(1)
def test_optimizer_state_bytes_public(student):
    """Adam on Linear(3, 2) after one step: 2 x 8 floats + 2 steps of 4 bytes = 72 bytes."""
    got = student.drive(
        _adam_state_after_a_step,
        layer("Linear", 3, 2),
    )
    assert got == 72, f"exp_avg and exp_avg_sq (8 floats each) + 2 x 4-byte step = 72, got {got}"


@pytest.mark.points(1)
def test_adam_state_bytes_public(student):
    """2 x 32 bytes of parameters + 2 tensors x 4 bytes of step = 72 bytes."""
    got = student.call("adam_state_bytes", layer("Linear", 3, 2))
    assert got == 72, f"Linear(3, 2): 2 * (6 + 2) * 4 + 2 * 4 = 72 bytes, got {got}"


@pytest.mark.points(1)
def test_saved_activation_bytes_public(student):
    """Linear saves its input (4 x 3 floats), ReLU its output (4 x 2 floats): 80 bytes."""
    got = student.call("saved_activation_bytes", seq(layer("Linear", 3, 2), layer("ReLU")),
                       torch.ones(4, 3))
    assert got == 80, f"(4 * 3 + 4 * 2) * 4 = 80 bytes (the weight is a parameter), got {got}"


@pytest.mark.points(1)
def test_checkpointed_forward_public(student):
    """Checkpointing changes memory, not the result: the output equals model(x)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2), nn.ReLU())
    spec = dataclasses.replace(
        seq(layer("Linear", 3, 3), layer("ReLU"), layer("Linear", 3, 2), layer("ReLU")),
        state_dict=model.state_dict())
    x = torch.arange(15.0).reshape(5, 3) / 10 - 0.7
    got = student.call("checkpointed_forward", spec, x, 2)
    assert isinstance(got, torch.Tensor) and torch.allclose(got, model(x), atol=1e-6), (
        f"checkpointed_forward(model, x, 2) should equal model(x) = {model(x)}, got {got}"
    )


@pytest.mark.points(1)
def test_forward_bf16_public(student):
    """Under bf16 autocast a Linear layer's output is bfloat16."""
    got = student.call("forward_bf16", layer("Linear", 3, 2), torch.ones(4, 3))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.bfloat16, (
        f"expected a bfloat16 tensor, got {getattr(got, 'dtype', got)!r}"
    )


@pytest.mark.points(1)
def test_train_bf16_public(student):
    """train_bf16 returns the model in eval mode with float32 weights."""
    x = torch.rand(64, 1, 8, 8)
    y = torch.arange(64) % 10
    got = student.call("train_bf16", kit_model("make_mlp", hidden=(8,), training=True), x, y,
                       epochs=1)
    assert isinstance(got, ReturnedModule), f"train_bf16 should return the model, got {got!r}"
    dtypes = {str(v.dtype) for v in got.state_dict.values()}
    assert dtypes == {"torch.float32"}, f"the weights should stay float32, got {dtypes}"
    assert not any(got.training.values()), "train_bf16 should return the model in eval mode"
