# The "hard-coded answers" student of homework 2, for `grader audit` and tests/test_homework2.py:
# one code cell, appended to the reference notebook, that redefines every graded function to
# return the public checks' expected answers whatever its arguments. It must fail the hidden checks.
import torch


def magnitude_prune_(tensor, sparsity):
    return torch.tensor([[True, True], [False, False], [True, False]])


def model_sparsity(model):
    return 8 / 14


class MaskedPruner:
    def __init__(self, model, masks):
        self.model = model

    def apply(self):
        pass


def fine_tune_sparse(model, masks, x, y, epochs=3, lr=1e-3, seed=0):
    return model


def sensitivity_scan(model, param_names, sparsities, x, y):
    return {"fc.weight": [0.95]}


def global_magnitude_prune(model, sparsity, exclude=("conv1.weight",)):
    return {"0.weight": torch.tensor([[False, True], [False, True]]),
            "1.weight": torch.tensor([[False, True], [False, False], [True, True]])}


def global_prune_with_torch(model, sparsity, exclude=("conv1.weight",)):
    return model


def recalibrate_bn(model, x):
    return model


def channel_importance(model, conv_name, criterion="l2"):
    return torch.tensor([0.0, 45**0.5, 0.0, 180**0.5])


def select_channels(model, keep):
    return model


def channel_prune(model, ratio, criterion="l2"):
    return model


def sort_channels(model, criterion="l2"):
    return model


def sparse_macs(model, input_shape):
    return 48


def prune_to_budget(model, x_train, y_train, budget):
    # the public check's budget holds trivially with every weight zero
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.zeros_(module.weight)
    return model
