"""The check authors' helpers in grader.checks that need no kernel (the ones that call into a
kernel are tested with one in test_bridge.py and test_draws.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import nncourse
from grader.checks import (
    ReturnedModule,
    accuracy_on_test_split,
    layer,
    pair,
    pretrained_state,
    returned_module,
    with_state,
)


@pytest.mark.parametrize(("given", "expected"), [(3, (3, 3)), ((3, 5), (3, 5)), ([2, 1], (2, 1))])
def test_pair_gives_two_ints(given, expected):
    assert pair(given) == expected


def test_with_state_carries_a_copy_of_the_modules_weights():
    module = nn.Linear(4, 3)
    spec = with_state(layer("Linear", 4, 3), module)
    assert spec.args == (4, 3) and set(spec.state_dict) == {"weight", "bias"}
    assert torch.equal(spec.state_dict["weight"], module.weight)
    with torch.no_grad():
        module.weight.add_(1.0)
    assert not torch.equal(spec.state_dict["weight"], module.weight)  # a copy, not a view


def test_returned_module_passes_a_model_and_fails_anything_else():
    model = ReturnedModule(layers=(), state_dict={}, training={})
    assert returned_module(model, "prune") is model
    with pytest.raises(AssertionError, match="prune should return a model .*got int"):
        returned_module(5, "prune")


def test_pretrained_state_is_a_fresh_copy_each_time():
    first = pretrained_state("cnn_16_32_64")
    key = next(iter(first))
    first[key].add_(1.0)
    assert not torch.equal(first[key], pretrained_state("cnn_16_32_64")[key])


def test_accuracy_on_test_split_measures_and_names_a_model_that_does_not_fit():
    model = nncourse.load_pretrained("cnn_16_32_64")
    _, _, x_test, y_test = nncourse.load_digits_split()
    assert accuracy_on_test_split(model) == nncourse.evaluate(model, x_test, y_test) > 0.9
    with pytest.raises(AssertionError, match="the pruned model fails on the test images"):
        accuracy_on_test_split(nn.Sequential(nn.Flatten(), nn.Linear(7, 10)), "the pruned model")
