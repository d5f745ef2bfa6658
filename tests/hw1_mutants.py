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
    # count_params counts only what the optimizer updates (requires_grad), not frozen ones
    "count_params_trainable_only": [
        (
            "    return sum(p.numel() for p in module.parameters())\n",
            "    return sum(p.numel() for p in module.parameters() if p.requires_grad)\n",
        )
    ],
    # count_params counts a tied weight, or a module used twice, once per use
    "count_params_shared_counted_twice": [
        (
            "    return sum(p.numel() for p in module.parameters())\n",
            "    return sum(p.numel() for _, p in "
            "module.named_parameters(remove_duplicate=False))\n",
        )
    ],
    # dtype_bytes from a table of the course's eight dtypes instead of finfo / iinfo
    "dtype_bytes_course_table": [
        (
            "    info = torch.finfo(dtype) if dtype.is_floating_point else torch.iinfo(dtype)\n"
            "    return info.bits // 8\n",
            "    table = {torch.int8: 1, torch.uint8: 1, torch.int32: 4, torch.int64: 8,\n"
            "             torch.float16: 2, torch.bfloat16: 2,\n"
            "             torch.float32: 4, torch.float64: 8}\n"
            "    return table[dtype]\n",
        )
    ],
    # dtype_bytes returns the bits
    "dtype_bytes_in_bits": [("    return info.bits // 8\n", "    return info.bits\n")],
    # format_bytes in powers of 1000 (the disk maker's units)
    "format_bytes_powers_of_1000": [
        (
            "    if n < 1024:\n        return f\"{n} B\"\n",
            "    if n < 1000:\n        return f\"{n} B\"\n",
        ),
        ("n >= 1024 ** (power + 1)", "n >= 1000 ** (power + 1)"),
        ("n / 1024**power:.2f", "n / 1000**power:.2f"),
    ],
    # model_size_bytes: 4 bytes per element whatever the dtype
    "model_size_float32_assumed": [
        ("p.numel() * dtype_bytes(p.dtype) for p in model.parameters()",
         "p.numel() * 4 for p in model.parameters()"),
        ("b.numel() * dtype_bytes(b.dtype) for _, b in model.named_buffers()",
         "b.numel() * 4 for _, b in model.named_buffers()"),
    ],
    # model_size_bytes: buffers as the state_dict less the parameters (non-persistent buffers
    # missed, a tied weight's second name counted as a buffer)
    "buffers_from_state_dict": [
        (
            "    buffers = sum(b.numel() * dtype_bytes(b.dtype) for _, b in "
            "model.named_buffers())\n",
            "    buffers = sum(t.numel() * dtype_bytes(t.dtype) for t in "
            "model.state_dict().values())\n"
            "    buffers -= parameters\n",
        )
    ],
    # model_size_bytes: parameters module by module, a tied weight once per layer that holds it
    "model_size_tied_counted_twice": [
        ("p.numel() * dtype_bytes(p.dtype) for p in model.parameters()",
         "p.numel() * dtype_bytes(p.dtype) for m in model.modules()\n"
         "                     for p in m.parameters(recurse=False)"),
    ],
    # activation_peak_bytes: only each layer's output, as if its input were already freed
    "activation_peak_outputs_only": [
        ("for t in (inputs[0], output)}", "for t in (output,)}")
    ],
    # activation_peak_bytes: the model's input counted as an activation
    "activation_peak_input_counted": [
        ("        storages.pop(caller, None)  # the model's input belongs to the caller\n", "")
    ],
    # activation_peak_bytes: a float32 input whatever the model's dtype
    "activation_peak_float32_input": [
        ("    x = torch.zeros(input_shape, dtype=torch.float32 if first is None else "
         "first.dtype)\n",
         "    x = torch.zeros(input_shape)\n")
    ],
    # forward_peak_bytes: no warm-up forward before the profiled one
    "forward_peak_no_warmup": [("            model(x)  # warm-up, outside the session\n", "")],
    # forward_peak_bytes: every allocation of the session added up, frees ignored
    "forward_peak_allocations_summed": [
        ("        running += nbytes\n        peak = max(peak, running)\n",
         "        peak += max(nbytes, 0)\n")
    ],
    # forward_peak_bytes: measured with autograd on (activations kept for a backward)
    "forward_peak_grad_enabled": [
        ("        with torch.no_grad():\n            model(x)  # warm-up",
         "        if True:\n            model(x)  # warm-up")
    ],
    # forward_peak_bytes: the model measured in the mode it came in
    "forward_peak_train_mode": [
        ("    was_training = {module: module.training for module in model.modules()}\n"
         "    model.eval()\n    try:\n        with torch.no_grad():\n            model(x)  # "
         "warm-up",
         "    was_training = {module: module.training for module in model.modules()}\n"
         "    try:\n        with torch.no_grad():\n            model(x)  # warm-up")
    ],
    # roofline_throughput: batches per second, not samples
    "roofline_throughput_per_batch": [
        ("/ (2 * in_features * out_features)", "/ (2 * batch * in_features * out_features)")
    ],
    # roofline_throughput: the MACs of a sample taken for its FLOPs
    "roofline_throughput_macs": [
        ("/ (2 * in_features * out_features)", "/ (in_features * out_features)")
    ],
    # throughput: the latency left in milliseconds
    "throughput_in_milliseconds": [
        (
            "samples_per_s[batch] = batch / (median_ms / 1000)",
            "samples_per_s[batch] = batch / median_ms",
        )
    ],
    # throughput: the best case (10th percentile) rather than the median
    "throughput_best_case": [
        ('["median_ms"]\n        samples_per_s', '["p10_ms"]\n        samples_per_s')
    ],
    # throughput: calls per second, the batch size forgotten
    "throughput_calls_per_second": [
        (
            "samples_per_s[batch] = batch / (median_ms / 1000)",
            "samples_per_s[batch] = 1000 / median_ms",
        )
    ],
    # attention_model_macs as it was: a model that is one encoder layer gets ".linear1" and its
    # inner Linear modules counted again
    "attention_root_prefixed": [
        (
            'entry = f"{name}.{names[key]}" if name else names[key]',
            'entry = f"{name}.{names[key]}"',
        ),
        (
            'return encoder == "" or name.startswith(encoder + ".")',
            'return name.startswith(encoder + ".")',
        ),
    ],
    # model_macs over the model's children only: nested layers and the model itself missed
    "model_macs_children_only": [
        ("    for name, module in model.named_modules():\n"
         "        if isinstance(module, (nn.Conv2d, nn.Linear)):\n            macs[name] = 0\n",
         "    for name, module in model.named_children():\n"
         "        if isinstance(module, (nn.Conv2d, nn.Linear)):\n            macs[name] = 0\n")
    ],
    # elementwise_flops: a BatchNorm without running statistics counted as inference in eval mode
    "bn_without_statistics_as_inference": [
        ("if module.training or not module.track_running_stats:", "if module.training:")
    ],
    # measure_latency times with autograd on
    "latency_grad_enabled": [
        ("        with torch.no_grad():\n            for _ in range(warmup):",
         "        if True:\n            for _ in range(warmup):")
    ],
    # model_macs restores one flag, the root's, for the whole model
    "counter_restores_the_root_flag_only": [
        ("            handle.remove()\n"
         "        for name, module in model.named_modules():\n"
         "            module.training = was_training[name]\n",
         "            handle.remove()\n        model.train(was_training[\"\"])\n")
    ],
    # measure_latency restores one flag, the root's, for the whole model
    "latency_restores_the_root_flag_only": [
        ("        for name, module in model.named_modules():\n"
         "            module.training = was_training[name]\n    q = torch",
         "        model.train(was_training[\"\"])\n    q = torch")
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
    "count_params_trainable_only": ("test_count_params_frozen_and_shared",),
    "count_params_shared_counted_twice": ("test_count_params_frozen_and_shared",),
    "dtype_bytes_course_table": ("test_dtype_bytes",),
    "dtype_bytes_in_bits": (
        "test_dtype_bytes",
        "test_model_size_bytes_dtypes_sharing_and_buffers",
        "test_model_size_bytes_layers_and_models",
    ),
    "format_bytes_powers_of_1000": ("test_format_bytes",),
    "model_size_float32_assumed": ("test_model_size_bytes_dtypes_sharing_and_buffers",),
    "buffers_from_state_dict": ("test_model_size_bytes_dtypes_sharing_and_buffers",),
    "model_size_tied_counted_twice": ("test_model_size_bytes_dtypes_sharing_and_buffers",),
    "activation_peak_outputs_only": ("test_activation_peak_bytes",),
    "activation_peak_input_counted": ("test_activation_peak_bytes",),
    "activation_peak_float32_input": ("test_activation_peak_bytes",),
    "forward_peak_no_warmup": ("test_forward_peak_bytes_protocol",),
    "forward_peak_allocations_summed": ("test_forward_peak_bytes_matches_the_graders_profiler",),
    "forward_peak_grad_enabled": ("test_forward_peak_bytes_matches_the_graders_profiler",),
    "forward_peak_train_mode": (
        "test_forward_peak_bytes_protocol",
        "test_measuring_functions_restore_mixed_modes",
    ),
    "roofline_throughput_per_batch": ("test_roofline_throughput",),
    "roofline_throughput_macs": ("test_roofline_throughput",),
    "throughput_in_milliseconds": ("test_throughput_on_the_graders_clock",),
    "throughput_best_case": ("test_throughput_on_the_graders_clock",),
    "throughput_calls_per_second": ("test_throughput_on_the_graders_clock",),
    "attention_root_prefixed": ("test_counters_name_the_root_itself_and_nested_modules",),
    "model_macs_children_only": ("test_counters_name_the_root_itself_and_nested_modules",),
    "bn_without_statistics_as_inference": ("test_elementwise_flops_normalization",),
    "latency_grad_enabled": ("test_measure_latency_percentiles",),
    "counter_restores_the_root_flag_only": ("test_measuring_functions_restore_mixed_modes",),
    "latency_restores_the_root_flag_only": ("test_measuring_functions_restore_mixed_modes",),
}
