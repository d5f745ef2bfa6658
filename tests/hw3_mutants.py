"""Wrong versions of the homework 3 reference notebook, to show the hidden checks catch them.

`MUTANTS[name]` is a list of `(old, new)` exact source-text replacements. Each `old` occurs
exactly once in the reference notebook's code cells taken together
(`solutions/hw3/hw3.ipynb`); apply every pair of a mutant to the cell that holds `old`.

`CONSTANTS_SOURCE` is the "hard-coded answers" student: one code cell that redefines every
graded function to return the expected value of its first public check case
(`assignments/hw3/checks/test_hw3_public.py`) whatever its arguments. It is meant to be
appended as the last code cell of the reference notebook (later definitions win); it also runs
on its own, since it imports what it uses. `MUTANTS["constants"]` is empty and
`apply_mutant(cells, "constants")` does the appending.

Every mutant must lose points under `solutions/hw3/checks/test_hw3.py`. Mutants that break a
function the notebook's own self-check cell tests also make that cell raise.
"""

from __future__ import annotations

MUTANTS: dict[str, list[tuple[str, str]]] = {
    # tucker2_conv: U_in reshaped instead of transposed into the first 1x1 weight (the shapes
    # still fit, so nothing raises)
    "factors_transposed": [
        (
            "first.weight.copy_(U_in.T.reshape(r_in, c_in, 1, 1))",
            "first.weight.copy_(U_in.reshape(r_in, c_in, 1, 1))",
        )
    ],
    # tucker2_conv: the stride subsamples the input of the first 1x1 conv, not the k x k window
    "stride_on_the_wrong_layer": [
        (
            "    first = nn.Conv2d(c_in, r_in, 1, bias=False)\n",
            "    first = nn.Conv2d(c_in, r_in, 1, stride=conv.stride, bias=False)\n",
        ),
        (
            "conv.kernel_size, stride=conv.stride, padding=conv.padding,",
            "conv.kernel_size, padding=conv.padding,",
        ),
    ],
    # tucker2_conv: the last 1x1 conv has no bias, so the original bias is lost
    "bias_dropped": [
        (
            "last = nn.Conv2d(r_out, c_out, 1, bias=conv.bias is not None)",
            "last = nn.Conv2d(r_out, c_out, 1, bias=False)",
        )
    ],
    # svd_rank_for_energy: searchsorted's index taken as the rank (one too small)
    "rank_off_by_one": [
        ("share.dtype))[0]) + 1\n", "share.dtype))[0])\n"),
    ],
    # svd_rank_for_energy: shares of the singular values, not of their squares
    "energy_of_singular_values": [("    energy = s**2\n", "    energy = s\n")],
    # svd_linear: S_r forgotten, the first weight is Vh_r alone
    "singular_values_dropped": [
        ("first.weight.copy_(S[:rank, None] * Vh[:rank])", "first.weight.copy_(Vh[:rank])")
    ],
    # hooi_tucker2: each update re-reads the unprojected unfolding, so it stays at HOSVD
    "hooi_without_projection": [
        (
            "U_out = torch.linalg.svd(unfold(projected, 0), full_matrices=False)",
            "U_out = torch.linalg.svd(unfold(W, 0), full_matrices=False)",
        ),
        (
            "U_in = torch.linalg.svd(unfold(projected, 1), full_matrices=False)",
            "U_in = torch.linalg.svd(unfold(W, 1), full_matrices=False)",
        ),
    ],
    # cp_conv: the whole stride on the vertical depth-wise conv, none on the horizontal one
    "cp_stride_on_one_layer": [
        ("stride=(sh, 1), padding=(ph, 0)", "stride=(sh, sw), padding=(ph, 0)"),
        ("stride=(1, sw), padding=(0, pw)", "stride=1, padding=(0, pw)"),
    ],
    # cp_conv: the conv's padding on both axes of both depth-wise convs
    "cp_padding_on_both_axes": [
        ("padding=(ph, 0),", "padding=conv.padding,"),
        ("padding=(0, pw),", "padding=conv.padding,"),
    ],
    # compress_cnn: edits the model it was given instead of a copy
    "compress_in_place": [
        ("    compressed = copy.deepcopy(model)\n", "    compressed = model\n"),
    ],
    # returns the public checks' expected values: see CONSTANTS_SOURCE
    "constants": [],
}

CONSTANTS_SOURCE = '''
import torch
from torch import nn


def svd_linear(linear, rank):
    block = nn.Sequential(nn.Linear(3, 1, bias=False), nn.Linear(1, 2))
    with torch.no_grad():
        block[0].weight.copy_(torch.tensor([[3.0, 0.0, 0.0]]))
        block[1].weight.copy_(torch.tensor([[1.0], [0.0]]))
        block[1].bias.copy_(torch.tensor([0.5, -0.5]))
    return block


def svd_rank_for_energy(W, tau):
    return 1


def unfold(T, mode):
    return torch.tensor([[0.0, 1, 2, 3, 12, 13, 14, 15], [4, 5, 6, 7, 16, 17, 18, 19],
                         [8, 9, 10, 11, 20, 21, 22, 23]])


def hosvd_tucker2(W, r_out, r_in):
    core = torch.tensor([[[[1.0, -1.0], [0.5, 2.0]]]]) * 15.0
    return core, torch.tensor([[1.0], [2.0], [2.0]]) / 3, torch.tensor([[3.0], [4.0]]) / 5


def hooi_tucker2(W, r_out, r_in, n_iter=10):
    return hosvd_tucker2(W, r_out, r_in)


def tucker2_conv(conv, r_out, r_in, method="hosvd"):
    return nn.Sequential(nn.Conv2d(4, 2, 1, bias=False),
                         nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False), nn.Conv2d(3, 6, 1))


def cp_decompose(W, rank, n_iter_max=300, random_state=0):
    return [torch.tensor([[1.0], [-2.0], [0.5]]), torch.tensor([[2.0], [1.0]]),
            torch.tensor([[1.0], [0.5], [-1.0]]), torch.tensor([[1.0], [3.0]])]


def cp_conv(conv, rank, n_iter_max=300, random_state=0):
    return nn.Sequential(
        nn.Conv2d(4, 2, 1, bias=False),
        nn.Conv2d(2, 2, (3, 1), stride=(2, 1), padding=(1, 0), groups=2, bias=False),
        nn.Conv2d(2, 2, (1, 3), stride=(1, 2), padding=(0, 1), groups=2, bias=False),
        nn.Conv2d(2, 6, 1),
    )


def tucker2_ranks(W, tau):
    return (1, 1)


def tucker2_rank_for_budget(c_out, c_in, kernel_size, rate):
    return 2


def compress_cnn(model, tau, layers=("conv2", "conv3")):
    return model


def compress_and_finetune(model, tau, epochs=3, lr=1e-3, seed=0):
    return model
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
