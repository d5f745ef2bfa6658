"""Wrong versions of the homework 4 reference notebook, to show the hidden checks catch them.

`MUTANTS[name]` is a list of `(old, new)` exact source-text replacements. Each `old` occurs
exactly once in the reference notebook's code cells taken together
(`solutions/hw4/hw4.ipynb`); apply every pair of a mutant to the cell that holds `old`.

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
    # symmetric_per_channel_scale clamps the scale at 1e-8 instead of max|w_c|: an all-zero
    # channel gets 1e-8, not 1e-8 / q_max
    "scale_clamped_instead_of_max": [("    return max_abs.clamp(min=1e-8) / qmax",
                                      "    return (max_abs / qmax).clamp(min=1e-8)")],
    # linear_quantize rounds halves up (floor(x + 0.5)), not to the even neighbour
    "round_half_up": [("torch.round(r / scale) + zero_point",
                       "torch.floor(r / scale + 0.5) + zero_point")],
    # linear_quantize takes the zero point as a Python int (its type hint's first half): a
    # tensor of one zero point per channel no longer works
    "zero_point_as_int": [("torch.round(r / scale) + zero_point",
                           "torch.round(r / scale) + int(zero_point)")],
    # dequantize takes the scale as a Python float: one scale per channel no longer works
    "dequantize_scalar_scale": [("(q.to(torch.float32) - zero_point) * scale",
                                 "(q.to(torch.float32) - zero_point) * float(scale)")],
    # update_codebook writes the new centroids into the codebook it was given
    "codebook_updated_in_place": [
        ("    return torch.where(counts > 0,",
         "    codebook.copy_(torch.where(counts > 0, sums / counts.clamp(min=1), codebook))\n"
         "    return torch.where(counts > 0,"),
    ],
    # fold_bn builds the new conv without the groups, the dilation or the padding mode
    "fold_without_groups": [("dilation=conv.dilation, groups=conv.groups, bias=True,",
                             "dilation=conv.dilation, bias=True,")],
    "fold_without_dilation": [("padding=conv.padding, dilation=conv.dilation, groups=",
                               "padding=conv.padding, groups=")],
    "fold_without_padding_mode": [("        padding_mode=conv.padding_mode,\n", "")],
    # quantize_bias and quantized_linear use w_scale as given: a (C_out, 1) scale broadcasts
    # against the (C_out,) bias (or the (N, C_out) accumulator) into the wrong shape
    "bias_w_scale_not_flattened": [
        ("    w_scale = torch.as_tensor(w_scale, dtype=torch.float32).reshape(-1)\n"
         "    return torch.round(",
         "    w_scale = torch.as_tensor(w_scale, dtype=torch.float32)\n"
         "    return torch.round("),
    ],
    "requant_w_scale_not_flattened": [
        ("    w_scale = torch.as_tensor(w_scale, dtype=torch.float32).reshape(-1)\n"
         "    multiplier =",
         "    w_scale = torch.as_tensor(w_scale, dtype=torch.float32)\n"
         "    multiplier ="),
    ],
    # qat_train parametrizes and trains the model it was given, not a copy
    "qat_trains_the_given_model": [("    qat = copy.deepcopy(model)\n", "    qat = model\n")],
    # ptq_int8 wraps, fuses and converts the model it was given, not a copy
    "ptq_on_the_given_model": [("tq.QuantWrapper(copy.deepcopy(model)).eval()",
                                "tq.QuantWrapper(model).eval()")],
    # dynamic_quantize quantizes the given MLP in place
    "dynamic_in_place": [
        ("    return tq.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)\n",
         "    return tq.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)\n"),
    ],
    # -- the challenge (section 9) --
    # quantize_to_budget lets an allocation one byte over the budget through
    "over_budget_by_one_byte": [("if sum(option[1] for option in choice) <= budget)",
                                "if sum(option[1] for option in choice) <= budget + 1)")],
    # quantize_to_budget counts the bytes of the convolutions only (the Linear layer as free)
    "budget_counts_only_the_convs": [
        ("options[name].append((loss - base_loss, packed_size({name: entry}), entry))",
         "options[name].append((loss - base_loss, packed_size({name: entry})\n"
         "                          if isinstance(module, nn.Conv2d) else 0, entry))"),
    ],
    # quantize_to_budget counts codes and float16 scales but not the zero points
    "zero_points_not_counted": [
        ("options[name].append((loss - base_loss, packed_size({name: entry}), entry))",
         "options[name].append((loss - base_loss, entry[\"codes\"].numel()\n"
         "                          + 2 * entry[\"scale\"].numel(), entry))"),
    ],
    # quantize_layer stores one code per byte: quantized, but not packed
    "codes_one_per_byte": [('"codes": pack_codes(codes.reshape(-1)[: flat.numel()], bits),',
                            '"codes": codes.reshape(-1)[: flat.numel()].to(torch.uint8),')],
    # quantize_layer keeps the scales in float32 (the notebook's format says float16)
    "scales_in_float32": [
        ("scale = ((hi - lo) / qmax).half()", "scale = ((hi - lo) / qmax)"),
    ],
    # an honest but weaker solution (bob's in `make demo`): the same allocation recipe, but each
    # layer quantized on section 2.2's symmetric grid, max|w_c| / (2^(b-1) - 1) per output
    # channel with the zero point at 2^(b-1), in the same format: 2^b - 1 levels, so 2-bit
    # weights get three of them (quantize_layer itself stays correct)
    "challenge_weaker": [
        ("            entry = quantize_layer(weight, bits, weight[0].numel())\n",
         "            entry = quantize_layer(weight, bits, weight[0].numel())\n"
         "            rows = weight.flatten(1)\n"
         "            scale = (rows.abs().amax(dim=1) / max(2 ** (bits - 1) - 1, 1)).half()\n"
         "            codes = (torch.round(rows / scale.float()[:, None]) + 2 ** (bits - 1))\n"
         "            zero_point = torch.full(scale.shape, 2 ** (bits - 1), dtype=torch.uint8)\n"
         "            entry = dict(entry, codes=pack_codes(codes.clamp(0, 2**bits - 1), bits),\n"
         "                         scale=scale, zero_point=zero_point)\n"),
    ],
}

# wrong version -> the hidden checks its bug must fail (others may fail too)
CAUGHT_BY: dict[str, tuple[str, ...]] = {
    "round_before_divide": ("test_linear_quantize_exact",),
    "zero_point_not_clamped": ("test_affine_qparams_zero_point_clamped",),
    "int8_accumulation": ("test_quantized_linear_exact",),
    "per_tensor_scale": ("test_symmetric_per_channel_scale",),
    "qat_without_ste": ("test_fake_quantize_ste_gradient",),
    "float_model_as_quantized": ("test_ptq_int8_really_quantized",),
    "calibration_skipped": ("test_ptq_int8_accuracy",),
    "dynamic_not_quantized": ("test_dynamic_quantize",),
    "bias_scale_without_input_scale": ("test_quantize_bias",),
    "zero_point_fold_sign": ("test_shift_bias",),
    "bn_folded_with_variance": ("test_fold_bn_matches_conv_then_bn",),
    "empty_cluster_zeroed": ("test_update_codebook",),
    "codebook_never_updated": ("test_kmeans_quantize_fixed_point",),
    "scale_clamped_instead_of_max": ("test_symmetric_per_channel_scale",),
    "round_half_up": ("test_linear_quantize_rounds_half_to_even",),
    "zero_point_as_int": ("test_linear_quantize_exact",),
    "dequantize_scalar_scale": ("test_dequantize",),
    "codebook_updated_in_place": ("test_update_codebook",),
    "fold_without_groups": ("test_fold_bn_matches_conv_then_bn",),
    "fold_without_dilation": ("test_fold_bn_matches_conv_then_bn",),
    "fold_without_padding_mode": ("test_fold_bn_matches_conv_then_bn",),
    "bias_w_scale_not_flattened": ("test_quantize_bias",),
    "requant_w_scale_not_flattened": ("test_quantized_linear_exact",),
    "qat_trains_the_given_model": ("test_qat_train_works_on_a_copy",),
    "ptq_on_the_given_model": ("test_ptq_int8_leaves_the_model_alone",),
    "dynamic_in_place": ("test_dynamic_quantize",),
    "over_budget_by_one_byte": ("test_quantize_to_budget",),
    "budget_counts_only_the_convs": ("test_quantize_to_budget",),
    "zero_points_not_counted": ("test_quantize_to_budget",),
    "codes_one_per_byte": ("test_quantize_layer", "test_quantize_to_budget"),
    "scales_in_float32": ("test_quantize_layer", "test_quantize_to_budget"),
    "challenge_weaker": ("test_quantize_to_budget",),
}
