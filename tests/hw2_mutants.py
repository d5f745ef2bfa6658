"""Wrong versions of the homework 2 reference notebook, to show the hidden checks catch them.

`MUTANTS[name]` is a list of `(old, new)` exact source-text replacements. Each `old` occurs
exactly once in the reference notebook's code cells taken together
(`solutions/hw2/hw2.ipynb`); apply every pair of a mutant to the cell that holds `old`.

Every mutant must lose points under `solutions/hw2/checks/test_hw2.py`.
"""

from __future__ import annotations

import json
from pathlib import Path


def _region(function: str) -> str:
    """The body between the solution markers of the reference's `function` (its whole text, for
    a wrong version that replaces all of it)."""
    notebook = Path(__file__).parents[1] / "solutions" / "hw2" / "hw2.ipynb"
    for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
        source = "".join(cell["source"])
        if f"def {function}(" in source and "### BEGIN SOLUTION\n" in source:
            return source.split("### BEGIN SOLUTION\n")[1].split("    ### END SOLUTION")[0]
    raise LookupError(function)


CHALLENGE_REGION = _region("prune_to_budget")

MUTANTS: dict[str, list[tuple[str, str]]] = {
    # global_magnitude_prune names every weight "<module>.weight": a model that is one layer
    # gets the key ".weight" (the root module's name is "")
    "root_weight_prefixed": [
        ('        name = f"{module_name}.weight" if module_name else "weight"\n',
         '        name = f"{module_name}.weight"\n')
    ],
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
    # global_magnitude_prune keeps the weight at the threshold: one zero short of round(s * n)
    "global_count_one_short": [
        ("            masks[name] = w.abs() > threshold\n",
         "            masks[name] = w.abs() >= threshold\n")
    ],
    # recalibrate_bn re-calibrates the model but returns nothing
    "recalibrated_model_not_returned": [
        ("            module.training = was_training[name]\n    return model\n",
         "            module.training = was_training[name]\n")
    ],
    # select_channels slices a conv's weight but leaves its bias at full length
    "conv_bias_left_unsliced": [
        (
            "        if conv.bias is not None:\n"
            "            conv.bias = nn.Parameter(conv.bias.detach()[index].clone())\n",
            "",
        )
    ],
    # channel_prune with a float ratio prunes the course CNN's convs by name, not every Conv2d
    "float_ratio_only_for_named_convs": [
        (
            "{name: ratio for name, m in model.named_children() if isinstance(m, nn.Conv2d)}",
            "{name: ratio for name in model._modules if name.startswith(\"conv\")}",
        )
    ],
    # channel_prune drops the max(1, ...): a conv asked to keep 0.3 of a channel keeps none
    "no_channel_kept": [
        ("n_keep = max(1, round(len(importance) * (1 - r)))",
         "n_keep = round(len(importance) * (1 - r))")
    ],
    # sparse_macs divides with /: a float, not a count
    "sparse_macs_as_float": [("macs * int(torch.count_nonzero(weight)) // weight.numel()",
                              "macs * int(torch.count_nonzero(weight)) / weight.numel()")],
    # magnitude_prune_ takes any sparsity (kthvalue fails above 1, nothing is pruned below 0)
    "sparsity_not_validated": [
        (
            "    if not 0.0 <= sparsity <= 1.0:\n"
            '        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")\n',
            "",
        )
    ],
    # magnitude_prune_ with topk: exactly k entries pruned, ties at the threshold split at random
    "ties_split_by_topk": [
        (
            "        threshold = importance.flatten().kthvalue(num_zeros).values\n"
            "        mask = importance > threshold\n",
            "        mask = torch.ones(importance.numel(), dtype=torch.bool)\n"
            "        mask[importance.flatten().topk(num_zeros, largest=False).indices] = False\n"
            "        mask = mask.reshape(importance.shape)\n",
        )
    ],
    # fine_tune_sparse forgets its learning rate: nncourse.train's default 1e-2
    "fine_tune_lr_forgotten": [
        (
            "return nncourse.train(model, x, y, epochs=epochs, lr=lr, seed=seed, "
            "callback=pruner.apply)",
            "return nncourse.train(model, x, y, epochs=epochs, seed=seed, callback=pruner.apply)",
        )
    ],
    # recalibrate_bn re-estimates BatchNorm2d only: a BatchNorm1d keeps stale statistics
    "recalibrate_bn2d_only": [
        (
            "if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]",
            "if isinstance(m, nn.BatchNorm2d)]",
        )
    ],
    # channel_prune keeps the most important channels in order of importance, not their own
    "kept_channels_by_importance": [
        (
            "keep[conv_name] = importance.topk(n_keep).indices.sort().values",
            "keep[conv_name] = importance.topk(n_keep).indices",
        )
    ],
    # prune_to_budget hands out one weight more than the budget (the rest of the budget plus one)
    "challenge_over_budget_by_one": [
        ("count[name] += budget - used  #", "count[name] += budget - used + 1  #")
    ],
    # prune_to_budget reads section 4's "we exclude the first conv" into the challenge: conv1 is
    # left dense and outside the count, 288 weights over the budget
    "challenge_conv1_not_counted": [
        (
            "               if isinstance(m, PRUNABLE)}\n    n = CHALLENGE_SCAN_IMAGES\n",
            "               if isinstance(m, PRUNABLE) and name != \"conv1\"}\n"
            "    n = CHALLENGE_SCAN_IMAGES\n",
        )
    ],
    # prune_to_budget counts the convs only: fc's 1,280 weights stay dense, over the budget
    "challenge_convs_only": [
        (
            "               if isinstance(m, PRUNABLE)}\n    n = CHALLENGE_SCAN_IMAGES\n",
            "               if isinstance(m, nn.Conv2d)}\n    n = CHALLENGE_SCAN_IMAGES\n",
        )
    ],
    # prune_to_budget fine-tunes with plain nncourse.train: the pruned weights grow back
    "challenge_masks_not_kept": [
        (
            "    return fine_tune_sparse(model, masks, x_train, y_train, epochs=CHALLENGE_EPOCHS,\n"
            "                            lr=CHALLENGE_LR)\n    ### END SOLUTION",
            "    return nncourse.train(model, x_train, y_train, epochs=CHALLENGE_EPOCHS,\n"
            "                          lr=CHALLENGE_LR)\n    ### END SOLUTION",
        )
    ],
    # an honest, weaker challenge solution (for the examples' leaderboard): global magnitude
    # pruning of conv2, conv3 and fc to the budget less conv1's 288 weights (conv1 kept dense,
    # and counted), BatchNorm re-calibrated, no fine-tuning. Measured on the held-out images:
    # 0.24 at 1,875 weights (no points), 0.59 at 2,500 (39 %), 0.75 at 3,281 (50 %), 0.83 at
    # 4,000 and 0.86 at 4,686 (60 %); at the budget of WRONG_VERSION_SEED (2,834) about 45 %
    "challenge_weaker": [
        (
            CHALLENGE_REGION,
            "    first = model.conv1.weight.numel()  # conv1 stays dense, and counts\n"
            "    rest = sum(m.weight.numel() for m in model.modules()\n"
            "               if isinstance(m, PRUNABLE)) - first\n"
            "    global_magnitude_prune(model, 1 - (budget - first) / rest)\n"
            "    return recalibrate_bn(model, x_train)\n",
        )
    ],
}

# wrong version -> the hidden checks its bug must fail (others may fail too)
CAUGHT_BY: dict[str, tuple[str, ...]] = {
    "root_weight_prefixed": ("test_global_magnitude_prune",),
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
    "global_count_one_short": ("test_global_magnitude_prune", "test_global_magnitude_prune_edges"),
    "recalibrated_model_not_returned": ("test_recalibrate_bn",),
    "conv_bias_left_unsliced": (
        "test_select_channels_slices_biases_and_skips_a_missing_batchnorm",
        "test_channel_prune_prunes_every_conv_of_another_layout",
    ),
    "float_ratio_only_for_named_convs": ("test_channel_prune_prunes_every_conv_of_another_layout",),
    "no_channel_kept": ("test_channel_prune_structure_macs_params",),
    "sparse_macs_as_float": ("test_sparse_macs",),
    "sparsity_not_validated": ("test_arguments_outside_the_contract_are_refused",),
    "ties_split_by_topk": ("test_ties_at_the_threshold_are_pruned",),
    "fine_tune_lr_forgotten": ("test_fine_tune_sparse_keeps_masks",),
    "recalibrate_bn2d_only": ("test_recalibrate_bn",),
    "kept_channels_by_importance": ("test_channel_prune_keeps_the_important_channels",),
    "challenge_over_budget_by_one": ("test_prune_to_budget_challenge",),
    "challenge_conv1_not_counted": ("test_prune_to_budget_challenge",),
    "challenge_convs_only": ("test_prune_to_budget_challenge",),
    "challenge_masks_not_kept": ("test_prune_to_budget_challenge",),
    "challenge_weaker": ("test_prune_to_budget_challenge",),
}
