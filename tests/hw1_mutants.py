"""Wrong versions of the homework 1 reference notebook, to show the hidden checks catch them.

`MUTANTS[name]` is a list of `(old, new)` exact source-text replacements. Each `old` occurs
exactly once in the reference notebook's code cells taken together
(`solutions/hw1/hw1.ipynb`); apply every pair of a mutant to the cell that holds `old`.

Every mutant must lose points under `solutions/hw1/checks/test_hw1.py`. Mutants that break a
function the notebook's own self-check cell tests also make that cell raise.
"""

from __future__ import annotations

# encoder_layer_macs's reference body, replaced whole by the "fast_path_missed" mutant
ENCODER_SOLUTION = """    attention = layer.self_attn
    d, heads, hidden = attention.embed_dim, attention.num_heads, layer.linear1.out_features
    if input_shape[-1] != d:
        raise ValueError(f"last dimension {input_shape[-1]} is not d_model={d}")
    if attention.batch_first:
        batch, seq, _ = input_shape
    else:
        seq, batch, _ = input_shape
    tokens = batch * seq
    per_product = batch * heads * seq * seq * (d // heads)  # T x T scores of width d / h
    return {
        "in_proj": tokens * d * 3 * d,
        "out_proj": tokens * d * d,
        "linear1": tokens * d * hidden,
        "linear2": tokens * hidden * d,
        "qk": per_product,
        "av": per_product,
    }
"""

MUTANTS: dict[str, list[tuple[str, str]]] = {
    # conv2d_macs: C_in instead of C_in / groups (wrong for group and depth-wise convs)
    "groups_ignored": [("(c_in // groups)", "c_in")],
    # conv2d_output_hw (and so conv2d_macs): stride treated as 1
    "stride_ignored": [("    sh, sw = pair(stride)\n", "    sh, sw = 1, 1\n")],
    # conv2d_output_hw: the kernel's reach without dilation
    "dilation_ignored": [("    dh, dw = pair(dilation)\n", "    dh, dw = 1, 1\n")],
    # flops returns the MACs
    "flop_reported_as_mac": [("    return 2 * macs\n", "    return macs\n")],
    # linear_macs: in * out, as if there were one row (FlopCo's behaviour)
    "batch_ignored": [("    rows = math.prod(input_shape[:-1])\n", "    rows = 1\n")],
    # count_params counts the state_dict: BatchNorm buffers included
    "buffers_counted": [
        (
            "    return sum(p.numel() for p in module.parameters())\n",
            "    return sum(t.numel() for t in module.state_dict().values())\n",
        )
    ],
    # model_macs calls model.eval() and never restores the training flags
    "counter_leaves_train_mode": [
        (
            "            handle.remove()\n"
            "        for name, module in model.named_modules():\n"
            "            module.training = was_training[name]\n",
            "            handle.remove()\n",
        )
    ],
    # model_macs runs its forward in train mode: BatchNorm running statistics change (P2)
    "counter_forward_in_train_mode": [
        (
            "first.new_zeros(input_shape)\n    model.eval()\n",
            "first.new_zeros(input_shape)\n",
        )
    ],
    # measure_latency: no warm-up calls
    "warmup_ignored": [("            for _ in range(warmup):\n                model(x)\n", "")],
    # measure_latency: seconds labelled as milliseconds
    "latency_in_seconds": [
        (
            "times_ms.append((time.perf_counter() - start) * 1e3)",
            "times_ms.append(time.perf_counter() - start)",
        )
    ],
    # fixed_conv_macs keeps FlopCo's bug
    "flopco_bug_kept": [
        (
            "input_channels = module.in_channels // module.groups",
            "input_channels = 1 if module.groups != 1 else module.in_channels",
        )
    ],
    # arithmetic_intensity_linear counts only the weight bytes
    "weight_bytes_only": [
        (
            "elements = batch * in_features + in_features * out_features + batch * out_features",
            "elements = in_features * out_features",
        )
    ],
    # bound: the ridge point upside down
    "ridge_inverted": [("ai < peak_flops / bandwidth", "ai < bandwidth / peak_flops")],
    # model_macs without the refusal: attention's projections silently reported as 0 or missing
    "attention_counted_silently": [
        (
            "    if any(isinstance(module, nn.MultiheadAttention) for module in model.modules()):\n"
            "        raise ValueError(",
            "    if False:\n        raise ValueError(",
        )
    ],
    # elementwise_flops: GELU counted like ReLU, one FLOP per element
    "gelu_as_relu": [
        ('per_element = 9 if module.approximate == "tanh" else 5', "per_element = 1")
    ],
    # elementwise_flops: LayerNorm without the variance pass (square and sum)
    "layernorm_without_variance": [
        ("per_element = 7 if module.elementwise_affine else 5",
         "per_element = 5 if module.elementwise_affine else 3")
    ],
    # elementwise_flops: BatchNorm always counted with batch statistics, whatever its mode
    "batchnorm_mode_ignored": [
        ("if module.training or not module.track_running_stats:", "if True:")
    ],
    # model_flops: the residual additions are not counted
    "residual_addition_missed": [
        ("            counted.append(output.numel())\n", "            pass\n")
    ],
    # model_flops: fold_bn ignored, BatchNorm always costs its inference FLOPs
    "bn_never_folded": [
        ("elif not (fold_bn and isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d))):", "else:")
    ],
    # encoder_layer_macs: the input projection (Q, K and V) forgotten
    "in_proj_forgotten": [('        "in_proj": tokens * d * 3 * d,\n', "")],
    # encoder_layer_macs: Q K^T and A V counted once, not per sequence of the batch and per head
    "attention_products_once": [
        ("per_product = batch * heads * seq * seq * (d // heads)",
         "per_product = seq * seq * (d // heads)")
    ],
    # encoder_layer_macs: the input read as (batch, seq, d) whatever batch_first says
    "batch_first_ignored": [
        (
            "    if attention.batch_first:\n"
            "        batch, seq, _ = input_shape\n"
            "    else:\n"
            "        seq, batch, _ = input_shape\n",
            "    batch, seq, _ = input_shape\n",
        )
    ],
    # encoder_layer_macs measured with FlopCounterMode on the layer as given: right on the slow
    # path, 0 when PyTorch runs the fused fast path (eval, no_grad, batch_first, even heads)
    "fast_path_missed": [
        (
            ENCODER_SOLUTION,
            """    from torch.nn.attention import SDPBackend, sdpa_kernel

    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        layer(torch.zeros(input_shape))
    counts = {name.split(".", 1)[-1]: {str(op): n // 2 for op, n in ops.items()}
              for name, ops in counter.get_flop_counts().items()}
    attention = counts.get("self_attn", {})
    projections = attention.get("aten.mm", 0) + attention.get("aten.addmm", 0)  # 3 d^2 + d^2
    return {
        "in_proj": projections * 3 // 4,
        "out_proj": projections // 4,
        "linear1": counts.get("linear1", {}).get("aten.addmm", 0),
        "linear2": counts.get("linear2", {}).get("aten.addmm", 0),
        "qk": attention.get("aten.bmm", 0) // 2,
        "av": attention.get("aten.bmm", 0) // 2,
    }
""",
        )
    ],
    # flopco_prediction: FlopCo assumed to count the whole batch, as the course does
    "flopco_batch_counted": [
        ("value = flops(h_out * w_out * c_out * channels * k_h * k_w)  # one sample",
         "value = flops(output.shape[0] * h_out * w_out * c_out * channels * k_h * k_w)"),
        ("value = flops(module.in_features * module.out_features)  # one row",
         "value = flops(output.numel() * module.in_features)"),
    ],
    # flopco_prediction: FlopCo assumed to add out_features for a Linear bias
    "flopco_bias_out_features": [
        ("bias = module.in_features  # weight.shape (out, in) read as (in, out)",
         "bias = module.out_features"),
    ],
    # flopco_prediction: FlopCo assumed to get grouped convolutions right
    "flopco_groups_fixed": [
        ("channels = 1 if module.groups != 1 else module.in_channels  # FlopCo's formula",
         "channels = module.in_channels // module.groups"),
    ],
    # conv2d_macs: C_in / groups with a true division, a float where a count is an int
    "conv_macs_as_float": [("(c_in // groups)", "(c_in / groups)")],
    # model_macs: groups ignored, which the course CNN alone (no group conv) cannot show
    "model_macs_groups_ignored": [
        ("per_output = (module.in_channels // module.groups) * kh * kw",
         "per_output = module.in_channels * kh * kw")
    ],
    # model_macs: the hooks stay on the model
    "counter_hooks_left": [
        (
            "        for handle in handles:\n"
            "            handle.remove()\n"
            "        for name, module in model.named_modules():\n",
            "        for name, module in model.named_modules():\n",
        )
    ],
    # measure_latency: the 90th percentile reported as the median
    "latency_p90_is_median": [('"p90_ms": float(q[2])', '"p90_ms": float(q[1])')],
    # measure_latency: p10 and p90 as the 1st and 99th percentiles
    "latency_wrong_percentiles": [("[0.1, 0.5, 0.9]", "[0.01, 0.5, 0.99]")],
    # bound: the ridge point itself called memory-bound
    "ridge_is_memory_bound": [("ai < peak_flops / bandwidth", "ai <= peak_flops / bandwidth")],
    # elementwise_flops: 0 for a layer outside the table instead of a ValueError
    "unknown_layer_costs_nothing": [
        ('        raise ValueError(f"elementwise_flops has no row for {type(module).__name__}")',
         "        per_element = 0")
    ],
    # flopco_prediction: a layer that runs twice reported for its last call only
    "repeated_layer_counted_once": [
        ("reported[name] = reported.get(name, 0) + value", "reported[name] = value")
    ],
    # linear_macs counts an input of another width instead of refusing it
    "width_not_checked": [
        (
            "    if input_shape[-1] != in_features:\n"
            '        raise ValueError(f"last dimension {input_shape[-1]} is not '
            'in_features={in_features}")\n',
            "",
        )
    ],
}

# wrong version -> the hidden checks of the function its bug is in, which it must fail (others
# may fail too); every wrong version is listed
CAUGHT_BY: dict[str, tuple[str, ...]] = {
    "attention_counted_silently": ("test_model_macs_refuses_attention",),
    "attention_products_once": ("test_encoder_layer_macs_attention_products",),
    "batch_first_ignored": ("test_encoder_layer_macs_attention_products",),
    "batch_ignored": ("test_linear_macs",),
    "batchnorm_mode_ignored": (
        "test_counters_leave_no_hooks",
        "test_elementwise_flops_normalization",
        "test_model_flops_feed_forward",
        "test_model_flops_residual_and_folded_bn",
    ),
    "bn_never_folded": ("test_model_flops_residual_and_folded_bn",),
    "buffers_counted": ("test_count_params_layers", "test_count_params_sequential"),
    "conv_macs_as_float": (
        "test_conv2d_macs_grouped_depthwise_pointwise",
        "test_conv2d_macs_standard",
        "test_conv2d_macs_stride_dilation_batch",
    ),
    "counter_forward_in_train_mode": ("test_model_macs_leaves_model_as_found",),
    "counter_hooks_left": ("test_counters_leave_no_hooks",),
    "counter_leaves_train_mode": ("test_model_macs_leaves_model_as_found",),
    "dilation_ignored": ("test_conv2d_macs_stride_dilation_batch", "test_conv2d_output_hw"),
    "fast_path_missed": (
        "test_attention_model_macs",
        "test_encoder_layer_macs_attention_products",
        "test_encoder_layer_macs_weights",
    ),
    "flop_reported_as_mac": (
        "test_flops",
        "test_model_flops_feed_forward",
        "test_model_flops_residual_and_folded_bn",
    ),
    "flopco_batch_counted": (
        "test_counters_add_up_a_layer_that_runs_twice",
        "test_flopco_prediction_course_models",
        "test_flopco_prediction_grouped_and_sequences",
    ),
    "flopco_bias_out_features": (
        "test_counters_add_up_a_layer_that_runs_twice",
        "test_flopco_prediction_course_models",
    ),
    "flopco_bug_kept": ("test_fixed_conv_macs",),
    "flopco_groups_fixed": ("test_flopco_prediction_grouped_and_sequences",),
    "gelu_as_relu": ("test_elementwise_flops_activations", "test_model_flops_feed_forward"),
    "groups_ignored": (
        "test_conv2d_macs_grouped_depthwise_pointwise",
        "test_conv2d_macs_stride_dilation_batch",
    ),
    "in_proj_forgotten": (
        "test_attention_model_macs",
        "test_encoder_layer_macs_weights",
    ),
    "latency_in_seconds": ("test_measure_latency_percentiles", "test_measure_latency_sleep"),
    "latency_p90_is_median": ("test_measure_latency_percentiles",),
    "latency_wrong_percentiles": ("test_measure_latency_percentiles",),
    "layernorm_without_variance": (
        "test_elementwise_flops_normalization",
        "test_model_flops_feed_forward",
    ),
    "model_macs_groups_ignored": ("test_model_macs_grouped_strided_and_sequences",),
    "repeated_layer_counted_once": ("test_counters_add_up_a_layer_that_runs_twice",),
    "residual_addition_missed": ("test_model_flops_residual_and_folded_bn",),
    "ridge_inverted": ("test_roofline_and_bound",),
    "ridge_is_memory_bound": ("test_roofline_and_bound",),
    "stride_ignored": ("test_conv2d_macs_stride_dilation_batch", "test_conv2d_output_hw"),
    "unknown_layer_costs_nothing": ("test_elementwise_flops_refuses_other_layers",),
    "warmup_ignored": ("test_measure_latency_call_count", "test_measure_latency_percentiles"),
    "weight_bytes_only": ("test_arithmetic_intensity_linear",),
    "width_not_checked": ("test_inputs_of_the_wrong_width_are_refused",),
}
