"""Wrong versions of the homework 2 reference notebook, to show the hidden checks catch them.

`MUTANTS[name]` is a list of `(old, new)` exact source-text replacements. Each `old` occurs
exactly once in the reference notebook's code cells taken together
(`solutions/hw2/hw2.ipynb`); apply every pair of a mutant to the cell that holds `old`.

Every mutant must lose points under `solutions/hw2/checks/test_hw2.py`.
"""

from __future__ import annotations

MUTANTS: dict[str, list[tuple[str, str]]] = {
    # magnitude_prune_ keeps the entry at the threshold: one zero short (two at sparsity 1)
    "ties_counted_twice": [
        ("        mask = importance > threshold\n", "        mask = importance >= threshold\n")
    ],
    # global_magnitude_prune ranks the convs only: the Linear layer is never pruned
    "layer_skipped_in_global_pruning": [
        (
            "        if isinstance(module, PRUNABLE) and name not in exclude:\n",
            "        if isinstance(module, nn.Conv2d) and name not in exclude:\n",
        )
    ],
    # select_channels slices the conv and the next layer, not the BatchNorm in between
    "batchnorm_left_unsliced": [
        (
            "        if bn_name is not None:\n"
            "            bn = new.get_submodule(bn_name)\n"
            "            bn.weight = nn.Parameter(bn.weight.detach()[index].clone())\n"
            "            bn.bias = nn.Parameter(bn.bias.detach()[index].clone())\n"
            "            bn.running_mean = bn.running_mean[index].clone()\n"
            "            bn.running_var = bn.running_var[index].clone()\n"
            "            bn.num_features = len(index)\n",
            "",
        )
    ],
    # global_magnitude_prune upside down: the largest 90 % go, the smallest stay (the sparsity
    # is right, the accuracy is not)
    "largest_weights_pruned": [
        (
            "scores.kthvalue(num_zeros).values",
            "scores.kthvalue(scores.numel() - num_zeros).values",
        ),
        ("masks[name] = w.abs() > threshold", "masks[name] = w.abs() <= threshold"),
    ],
    # fine_tune_sparse applies the masks once, before training, never after an optimizer step
    "mask_not_reapplied": [
        (
            "lr=lr, seed=seed, callback=pruner.apply)\n",
            "lr=lr, seed=seed)\n",
        )
    ],
    # select_channels operates on the caller's model instead of a deep copy
    "original_model_mutated": [
        (
            "    new = copy.deepcopy(model)  # surgery on a copy",
            "    new = model  # surgery on a copy",
        )
    ],
    # sensitivity_scan never restores a weight: every later measurement sees earlier pruning
    "scan_does_not_restore": [
        (
            "param.copy_(original)  # restore before the next sparsity or layer\n",
            "pass\n",
        )
    ],
    # global_prune_with_torch leaves weight_orig / weight_mask in the model
    "prune_remove_forgotten": [
        ("    for module, name in targets:\n        prune.remove(module, name)\n", "")
    ],
    # recalibrate_bn keeps momentum 0.1: the statistics move only 10 % away from their reset
    "bn_momentum_kept": [
        (
            "            bn.momentum = None  # a cumulative average of the batches seen",
            "            pass  # a cumulative average of the batches seen",
        )
    ],
    # channel_importance "l2" on the conv's own filters (meaningless before BatchNorm)
    "importance_from_own_filters": [
        (
            "weight = model.get_submodule(next_name).weight.detach()",
            "weight = model.get_submodule(conv_name).weight.detach().transpose(0, 1)",
        )
    ],
    # sort_channels orders by increasing importance
    "channels_sorted_ascending": [("argsort(descending=True)", "argsort()")],
    # model_sparsity counts every parameter, biases and BatchNorm included
    "sparsity_over_all_parameters": [
        (
            "    for module in model.modules():\n"
            "        if isinstance(module, PRUNABLE):\n"
            "            zeros += int((module.weight == 0).sum())\n"
            "            total += module.weight.numel()\n",
            "    for param in model.parameters():\n"
            "        zeros += int((param == 0).sum())\n"
            "        total += param.numel()\n",
        )
    ],
    # sparse_macs counts the zeros as work: the dense MACs
    "zeros_counted_in_sparse_macs": [
        ("int(torch.count_nonzero(weight))", "weight.numel()")
    ],
}

# wrong version -> the hidden checks its bug must fail (others may fail too)
CAUGHT_BY: dict[str, tuple[str, ...]] = {
    "ties_counted_twice": ("test_magnitude_prune_exact_masks", "test_magnitude_prune_zero_count"),
    "layer_skipped_in_global_pruning": (
        "test_global_magnitude_prune",
        "test_global_pruning_and_fine_tuning_accuracy",
    ),
    "largest_weights_pruned": (
        "test_global_magnitude_prune",
        "test_global_pruning_and_fine_tuning_accuracy",
    ),
    "batchnorm_left_unsliced": (
        "test_select_channels",
        "test_channel_prune_structure_macs_params",
        "test_channel_prune_keeps_the_important_channels",
        "test_sort_channels_is_an_equivalence",
        "test_channel_pruning_and_fine_tuning_accuracy",
    ),
    "mask_not_reapplied": (
        "test_fine_tune_sparse_keeps_masks",
        "test_global_pruning_and_fine_tuning_accuracy",
    ),
    "original_model_mutated": ("test_channel_surgery_leaves_the_input_model_unchanged",),
    "scan_does_not_restore": (
        "test_sensitivity_scan_accuracies",
        "test_sensitivity_scan_leaves_model_as_found",
    ),
    "prune_remove_forgotten": ("test_global_prune_with_torch",),
    "bn_momentum_kept": ("test_recalibrate_bn",),
    "importance_from_own_filters": (
        "test_channel_importance",
        "test_channel_prune_keeps_the_important_channels",
        "test_sort_channels_is_an_equivalence",
    ),
    "channels_sorted_ascending": ("test_sort_channels_is_an_equivalence",),
    "sparsity_over_all_parameters": ("test_model_sparsity",),
    "zeros_counted_in_sparse_macs": ("test_sparse_macs",),
}
