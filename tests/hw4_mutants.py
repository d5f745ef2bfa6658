"""Wrong versions of the homework 4 reference notebook, to show the hidden checks catch them.

`MUTANTS[name]` is a list of `(old, new)` exact source-text replacements. Each `old` occurs
exactly once in the reference notebook's code cells taken together
(`solutions/hw4/hw4.ipynb`); apply every pair of a mutant to the cell that holds `old`.

`CONSTANTS_SOURCE` is the "hard-coded answers" student: one code cell that redefines every
graded function to return the expected value of its first public check case
(`assignments/hw4/checks/test_hw4_public.py`) whatever its arguments. It is meant to be
appended as the last code cell of the reference notebook (later definitions win); it also runs
on its own, since it imports what it uses. `MUTANTS["constants"]` is empty and
`apply_mutant(cells, "constants")` does the appending.

Every mutant must lose points under `solutions/hw4/checks/test_hw4.py`. Mutants that break a
function the notebook's own self-check cell tests also make that cell raise.
"""

from __future__ import annotations

MUTANTS: dict[str, list[tuple[str, str]]] = {
    # linear_quantize rounds r, then divides: round(r) / S + Z (codes truncated by the int8 cast)
    "round_before_divide": [("torch.round(r / scale) + zero_point",
                             "torch.round(r) / scale + zero_point")],
    # affine_qparams: the zero point of a one-sided range is left outside [q_min, q_max]
    "zero_point_not_clamped": [("    zero_point = min(max(zero_point, qmin), qmax)\n", "")],
    # quantized_linear multiplies int8 by int8: the accumulator is int8 and wraps around
    "int8_accumulation": [
        (
            "acc = q_x.to(torch.int32) @ q_w.to(torch.int32).T + shifted_q_bias",
            "acc = (q_x @ q_w.T).to(torch.int32) + shifted_q_bias",
        )
    ],
    # symmetric_per_channel_scale reduces over every dimension: one scale for the whole tensor
    "per_tensor_scale": [
        (
            "max_abs = w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True)",
            "max_abs = w.abs().amax(dim=tuple(range(w.dim())), keepdim=True)",
        )
    ],
    # fake_quantize_ste returns the rounded weights: no gradient reaches the latent weights
    "qat_without_ste": [("    return w + (w_q - w).detach()\n", "    return w_q\n")],
    # ptq_int8 returns the prepared float model (observers in it) instead of converting it
    "float_model_as_quantized": [("    return tq.convert(qmodel)\n", "    return qmodel\n")],
    # ptq_int8 never runs the calibration data: the observers have seen nothing
    "calibration_skipped": [("        qmodel(calib_x)\n", "        pass\n")],
    # dynamic_quantize returns a float copy
    "dynamic_not_quantized": [
        (
            "    return tq.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)\n",
            "    return copy.deepcopy(model)\n",
        )
    ],
    # quantize_bias uses the weight scale only, not S_x * S_w
    "bias_scale_without_input_scale": [
        ("torch.round(bias / (x_scale * w_scale))", "torch.round(bias / w_scale)")
    ],
    # shift_bias adds the zero-point term instead of subtracting it
    "zero_point_fold_sign": [
        ("(q_bias.to(torch.int32) - x_zero_point", "(q_bias.to(torch.int32) + x_zero_point")
    ],
    # fold_bn divides by the variance instead of the standard deviation
    "bn_folded_with_variance": [
        ("bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)",
         "bn.weight.detach() / (bn.running_var + bn.eps)")
    ],
    # update_codebook sets a centroid with no weights to 0 instead of keeping it
    "empty_cluster_zeroed": [
        (
            "torch.where(counts > 0, sums / counts.clamp(min=1), codebook.to(flat_w.dtype))",
            "sums / counts.clamp(min=1)",
        )
    ],
    # kmeans_quantize never moves the centroids: the linear grid, not k-means
    "codebook_never_updated": [
        ("        codebook = update_codebook(flat, labels, codebook)\n", "")
    ],
    # returns the public checks' expected values: see CONSTANTS_SOURCE
    "constants": [],
}

CONSTANTS_SOURCE = '''
import copy

import torch
import torch.ao.quantization as tq
from torch import nn


def qrange(bits, signed=True):
    return (-128, 127)


def linear_quantize(r, scale, zero_point, bits=8):
    return torch.tensor([-3, 0, 1, 2, 5, 7], dtype=torch.int8)


def dequantize(q, scale, zero_point):
    return torch.tensor([-1.0, -0.25, 0.0, 0.25, 1.0, 1.5])


def affine_qparams(r, bits=8):
    return 3 / 255, -43


def symmetric_per_channel_scale(w, bits=8):
    return torch.tensor([[2.0 / 7], [0.25 / 7], [1e-8 / 7]])


def update_codebook(w, labels, codebook):
    return torch.tensor([0.25, 2.0, 5.0])


def kmeans_quantize(w, bits, iters=100):
    return torch.tensor([0.25, 3.0]), torch.tensor([[0, 0, 0], [1, 1, 1]])


def kmeans_quantize_model(model, bits):
    return copy.deepcopy(model)


def fold_bn(conv, bn):
    return nn.Conv2d(1, 2, 1)


def quantize_bias(bias, x_scale, w_scale):
    return torch.tensor([10, -12], dtype=torch.int32)


def shift_bias(q_bias, q_w, x_zero_point):
    return torch.tensor([22, -10], dtype=torch.int32)


def quantized_linear(q_x, q_w, shifted_q_bias, x_scale, w_scale, y_scale, y_zero_point):
    return torch.tensor([[127, 19]], dtype=torch.int8)


def fake_quantize_ste(w, bits):
    return torch.tensor([[0.9, 0.0, 0.0], [0.1, 0.1, 0.0]])


def qat_train(model, x, y, bits=2, epochs=4, lr=5e-3, seed=0):
    return copy.deepcopy(model)


def ptq_int8(model, calib_x):
    return copy.deepcopy(model)


def dynamic_quantize(model):
    return copy.deepcopy(model)
'''


def apply_mutant(code_cells: list[str], name: str) -> list[str]:
    """The reference notebook's code cells with mutant `name` applied (a new list)."""
    cells = list(code_cells)
    for old, new in MUTANTS[name]:
        hits = [i for i, cell in enumerate(cells) if old in cell]
        count = sum(cell.count(old) for cell in cells)
        if count != 1:
            raise ValueError(f"mutant {name!r}: {old!r} occurs {count} times, not once")
        cells[hits[0]] = cells[hits[0]].replace(old, new)
    if name == "constants":
        cells.append(CONSTANTS_SOURCE)
    return cells
