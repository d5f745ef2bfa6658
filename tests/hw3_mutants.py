"""Wrong versions of the homework 3 reference notebook, to show the hidden checks catch them.

`MUTANTS[name]` is a list of `(old, new)` exact source-text replacements. Each `old` occurs
exactly once in the reference notebook's code cells taken together
(`solutions/hw3/hw3.ipynb`); apply every pair of a mutant to the cell that holds `old`.

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
    # tucker2_conv decomposes a grouped conv's weight as if it were dense (a shape error later)
    "grouped_conv_accepted": [
        (
            "    if conv.groups != 1:\n"
            '        raise ValueError("only groups=1 convolutions are decomposed")\n'
            "    if method not in",
            "    if method not in",
        )
    ],
}

# wrong version -> the hidden checks its bug must fail (others may fail too)
CAUGHT_BY: dict[str, tuple[str, ...]] = {
    "factors_transposed": ("test_tucker2_conv_equals_reconstructed_conv",),
    "stride_on_the_wrong_layer": ("test_tucker2_conv_structure",),
    "bias_dropped": ("test_tucker2_conv_equals_reconstructed_conv",),
    "rank_off_by_one": ("test_svd_rank_for_energy",),
    "energy_of_singular_values": ("test_svd_rank_for_energy",),
    "singular_values_dropped": ("test_svd_linear_is_the_truncated_svd",),
    "hooi_without_projection": ("test_hooi_improves_on_hosvd",),
    "cp_stride_on_one_layer": ("test_cp_conv_equals_the_original_on_exact_rank",),
    "cp_padding_on_both_axes": ("test_cp_conv_structure",),
    "compress_in_place": ("test_compress_cnn_leaves_the_model_unchanged",),
    "grouped_conv_accepted": ("test_arguments_outside_the_contract_are_refused",),
}
