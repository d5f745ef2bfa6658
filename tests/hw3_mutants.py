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
    # tt_svd: every step truncated at eps * ||A||_F, the sqrt(d - 1) of delta forgotten
    "tt_delta_without_sqrt": [
        ("delta = eps / math.sqrt(d - 1) * float(torch.linalg.norm(A))",
         "delta = eps * float(torch.linalg.norm(A))"),
    ],
    # tt_svd: each step keeps the energy share 1 - eps^2 of its own remainder (as
    # svd_rank_for_energy would), a tolerance relative to C instead of the fixed delta
    "tt_relative_to_each_remainder": [
        ("math.sqrt(sum(energy[rank - 1:])) <= delta:",
         "math.sqrt(sum(energy[rank - 1:])) <= eps * math.sqrt(sum(energy)):"),
    ],
    # tt_svd: the tail taken without s_rank, so one singular value too many is dropped
    "tt_tail_off_by_one": [
        ("math.sqrt(sum(energy[rank - 1:])) <= delta:", "math.sqrt(sum(energy[rank:])) <= delta:"),
    ],
    # tt_svd: no floor at rank 1: where delta exceeds the remainder nothing is kept
    "tt_rank_zero_allowed": [
        ("        while rank > 1 and", "        while rank > 0 and"),
    ],
    # tt_to_tensor: squeeze() drops the boundary ranks, and with them every mode of size 1
    "tt_to_tensor_squeezed": [
        ("    return full.reshape([core.shape[1] for core in cores])",
         "    return full.squeeze()"),
    ],
    # tt_matrix: W reshaped straight to (m_1 n_1, ..., m_d n_d), without interleaving the
    # output and input modes
    "tt_matrix_not_interleaved": [
        ("    C = W.reshape(*out_modes, *in_modes).permute(order)",
         "    C = W.reshape(*out_modes, *in_modes)"),
    ],
    # tt_matrix: the asked ranks taken as they are, never lowered
    "tt_matrix_ranks_not_lowered": [
        ("        rank = len(S)\n        cores.append(U.reshape(",
         "        rank = ranks[k + 1]\n        cores.append(U.reshape("),
    ],
    # tt_linear_forward: the dense W formed from the cores, then one matmul
    "tt_forward_forms_w": [
        ("    batch = x.shape[0]\n    z = x.reshape(batch, 1, -1)",
         "    return x @ tl.tt_matrix.tt_matrix_to_matrix(cores).T\n"
         "    batch = x.shape[0]\n    z = x.reshape(batch, 1, -1)"),
    ],
    # tt_linear_cost: the MACs of applying the cores right to left (the mirrored products)
    "tt_macs_right_to_left": [
        ("        macs += math.prod(out_modes[:k]) * math.prod(in_modes[k + 1:]) * core",
         "        macs += math.prod(in_modes[:k]) * math.prod(out_modes[k + 1:]) * core"),
    ],
    # tt_linear_cost: the parameters of the cores plus the bias, against "weights only"
    "tt_params_with_bias": [
        ("    return params, macs\n", "    return params + math.prod(out_modes), macs\n"),
    ],
    # tucker2_conv: writes the approximation back into the conv it was given ("to keep it in
    # sync"), against "`conv` is left unchanged"
    "tucker2_conv_overwrites_conv": [
        ("    core, U_out, U_in = decompose(conv.weight, r_out, r_in)\n",
         "    core, U_out, U_in = decompose(conv.weight, r_out, r_in)\n"
         "    with torch.no_grad():\n"
         "        conv.weight.copy_(tucker2_to_tensor(core, U_out, U_in))\n"),
    ],
    # compress_cnn: always decomposes conv2 and conv3, whatever `layers` asks
    "compress_cnn_ignores_layers": [
        ("    for name in layers:\n", '    for name in ("conv2", "conv3"):\n'),
    ],
    # compress_and_finetune: the 3 epochs of the text's experiment, whatever `epochs` asks
    "finetune_epochs_hard_coded": [
        ("nncourse.train(compressed, X, y, epochs=epochs,",
         "nncourse.train(compressed, X, y, epochs=3,"),
    ],
    # cp_conv: cp_decompose at its defaults, n_iter_max and random_state not passed on
    "cp_conv_defaults": [
        ("cp_decompose(conv.weight, rank, n_iter_max, random_state)",
         "cp_decompose(conv.weight, rank)"),
    ],
    # compress_to_macs, honest but weaker: the reference's per-layer ranks without the
    # fine-tuning (a clearly partial share of the challenge's points)
    "challenge_weaker": [
        ("    return nncourse.train(compressed, x_train, y_train, epochs=3, lr=1e-3, seed=0)\n",
         "    return compressed\n"),
    ],
    # compress_to_macs: an off-by-one in the search returns the first tau that does NOT fit
    # (over the budget by one step of the ranks)
    "challenge_one_step_over_budget": [
        ("    compressed = compressed_at(taus[low])\n",
         "    compressed = compressed_at(taus[min(low + 1, len(taus) - 1)])\n"),
    ],
    # compress_to_macs: the budget counted on the compressed convs only, conv1 and fc left out
    # of the count ("the budget is for the layers I decompose")
    "challenge_budget_on_the_convs_only": [
        ("        if model_macs(compressed_at(taus[middle])) <= budget:\n",
         "        candidate = compressed_at(taus[middle])\n"
         "        convs_only = (model_macs(candidate) - model_macs(model.conv1, (1, 1, 8, 8))\n"
         "                      - model_macs(model.fc, (1, 128)))\n"
         "        if convs_only <= budget:\n"),
    ],
    # compress_to_macs: "a factorization" read as a small network, a ReLU between the factors
    "challenge_relu_between_factors": [
        ("        return compress_cnn(model, tau, layers)  # energy ranks",
         "        small = compress_cnn(model, tau, layers)\n"
         "        for layer in layers:\n"
         "            block = small.get_submodule(layer)\n"
         "            relu_inside = nn.Sequential(block[0], block[1], nn.ReLU(), block[2])\n"
         "            setattr(small, layer, relu_inside)\n"
         "        return small  # energy ranks"),
    ],
    # compress_to_macs: the compressed layers put into the model it was given, against
    # "`model` is left unchanged"
    "challenge_changes_the_given_model": [
        ("    compressed = compressed_at(taus[low])\n",
         "    compressed = model\n"
         "    for name, child in compressed_at(taus[low]).named_children():\n"
         "        setattr(compressed, name, child)\n"),
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
    "tt_delta_without_sqrt": ("test_tt_svd_ranks",),
    "tt_relative_to_each_remainder": ("test_tt_svd_ranks",),
    "tt_tail_off_by_one": ("test_tt_svd_ranks", "test_tt_svd_exact_tt_rank"),
    "tt_rank_zero_allowed": ("test_tt_svd_ranks",),
    "tt_to_tensor_squeezed": ("test_tt_to_tensor",),
    "tt_matrix_not_interleaved": ("test_tt_matrix_exact_at_large_ranks",
                                  "test_tt_matrix_truncated"),
    "tt_matrix_ranks_not_lowered": ("test_tt_matrix_exact_at_large_ranks",),
    "tt_forward_forms_w": ("test_tt_linear_forward_never_forms_w",),
    "tt_macs_right_to_left": ("test_tt_linear_cost",),
    "tt_params_with_bias": ("test_tt_linear_cost",),
    "tucker2_conv_overwrites_conv": ("test_decompositions_leave_their_layer_unchanged",),
    "compress_cnn_ignores_layers": ("test_compress_cnn_ranks_and_outputs",),
    "finetune_epochs_hard_coded": ("test_compress_and_finetune_follows_the_recipe",),
    "cp_conv_defaults": ("test_cp_runs_the_asked_iterations",),
    "challenge_weaker": ("test_compress_to_macs_challenge",),
    "challenge_one_step_over_budget": ("test_compress_to_macs_challenge",),
    "challenge_budget_on_the_convs_only": ("test_compress_to_macs_challenge",),
    "challenge_relu_between_factors": ("test_compress_to_macs_challenge",),
    "challenge_changes_the_given_model": ("test_compress_to_macs_challenge",),
}
