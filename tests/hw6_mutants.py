"""Wrong versions of the homework 6 reference notebook, to show the hidden checks catch them.

`MUTANTS[name]` is a list of `(old, new)` exact source-text replacements. Each `old` occurs
exactly once in the reference notebook's code cells taken together
(`solutions/hw6/hw6.ipynb`); apply every pair of a mutant to the cell that holds `old`.

Every mutant must lose points under `solutions/hw6/checks/test_hw6.py`.
"""

from __future__ import annotations

MUTANTS: dict[str, list[tuple[str, str]]] = {
    # kd_loss without the T^2 factor: the soft term's gradient shrinks like 1/T^2
    "t_squared_missing": [
        (
            "return alpha * T**2 * kl + (1 - alpha) * ce",
            "return alpha * kl + (1 - alpha) * ce",
        )
    ],
    # kd_loss computes KL(student || teacher): F.kl_div's arguments swapped
    "kl_reversed": [
        (
            'kl = F.kl_div(log_p_student, p_teacher, reduction="batchmean")',
            "kl = F.kl_div(F.log_softmax(teacher_logits / T, dim=1), "
            'F.softmax(student_logits / T, dim=1), reduction="batchmean")',
        )
    ],
    # kd_loss with reduction="mean": also divided by the number of classes
    "kl_mean_reduction": [('reduction="batchmean"', 'reduction="mean"')],
    # kd_loss lets gradients flow into the teacher's logits
    "teacher_not_detached": [("    teacher_logits = teacher_logits.detach()\n", "")],
    # kd_loss treats unlabelled rows (-1) as class 0
    "unlabelled_rows_as_class_0": [
        (
            "ce = F.cross_entropy(student_logits[labelled], labels[labelled])",
            "ce = F.cross_entropy(student_logits, labels.clamp(min=0))",
        )
    ],
    # distill never looks at the teacher: cross-entropy on the labelled rows only
    "distill_ignores_teacher": [
        (
            "labels[idx], T=T, alpha=alpha)",
            "labels[idx], T=T, alpha=0.0)",
        )
    ],
    # distill drops the last, partial batch of every epoch: some rows are never trained on
    "distill_drops_last_partial_batch": [
        (
            "range(0, len(x), batch_size):\n"
            "            idx = order[start : start + batch_size]\n"
            "            opt.zero_grad()\n"
            "            loss = kd_loss(",
            "range(0, len(x) - batch_size + 1, batch_size):\n"
            "            idx = order[start : start + batch_size]\n"
            "            opt.zero_grad()\n"
            "            loss = kd_loss(",
        )
    ],
    # train_bf16 never zeroes the gradients: every step adds up all the batches so far
    "train_bf16_no_zero_grad": [
        (
            "            opt.zero_grad()\n            with torch.autocast",
            "            with torch.autocast",
        )
    ],
    # accumulated_grads adds to whatever gradients the model already had
    "accumulation_stale_gradients": [
        ("    model.zero_grad(set_to_none=True)\n    for xb, yb", "    for xb, yb")
    ],
    # checkpointed_forward checkpoints every module on its own, whatever `segments` says
    "checkpoint_every_module": [
        (
            "bounds = [round(i * len(model) / segments) for i in range(segments + 1)]",
            "bounds = list(range(len(model) + 1))",
        )
    ],
    # accumulated_grads sums the micro-batches' mean losses: gradients k times too large
    "accumulation_not_divided": [
        (
            "loss = F.cross_entropy(model(xb), yb) * len(xb) / len(x)  # N_m / N; 1/k if equal",
            "loss = F.cross_entropy(model(xb), yb)",
        )
    ],
    # accumulated_grads divides by k: exact only when the micro-batches have equal sizes
    "accumulation_divided_by_k": [("* len(xb) / len(x)", "/ micro_batches")],
    # adam_state_bytes forgets the 4-byte step counter of each parameter tensor
    "adam_step_forgotten": [
        (
            "return sum(2 * p.numel() * p.element_size() + 4 for p in trainable)",
            "return sum(2 * p.numel() * p.element_size() for p in trainable)",
        )
    ],
    # saved_activation_bytes counts the parameters' storages too
    "saved_bytes_count_parameters": [
        (
            "        if storage.data_ptr() not in parameters:\n"
            "            saved[storage.data_ptr()] = storage.nbytes()\n",
            "        saved[storage.data_ptr()] = storage.nbytes()\n",
        )
    ],
    # checkpointed_forward runs the segments without checkpoint: everything is saved anyway
    "checkpoint_saves_everything": [
        (
            "x = checkpoint(model[start:stop], x, use_reentrant=False)",
            "x = model[start:stop](x)",
        )
    ],
    # checkpoint_sequential leaves the last segment (with one segment: the whole model) plain
    "checkpoint_sequential_last_segment_plain": [
        (
            "    bounds = [round(i * len(model) / segments) for i in range(segments + 1)]\n"
            "    for start, stop in zip(bounds, bounds[1:], strict=False):\n"
            "        x = checkpoint(model[start:stop], x, use_reentrant=False)\n"
            "    return x\n",
            "    return torch.utils.checkpoint.checkpoint_sequential(model, segments, x,\n"
            "                                                        use_reentrant=False)\n",
        )
    ],
    # the reentrant implementation: nothing is recorded when the input does not require grad
    "checkpoint_reentrant": [("x, use_reentrant=False)", "x, use_reentrant=True)")],
    # forward_bf16 casts the model ("pure" bf16): bf16 parameters and gradients
    "pure_bf16": [
        (
            "    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):\n"
            "        return model(x)\n",
            "    return model.to(torch.bfloat16)(x.to(torch.bfloat16))\n",
        )
    ],
    # train_bf16 forgets autocast: an ordinary float32 training
    "train_bf16_without_autocast": [
        (
            "            with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):\n"
            "                loss = F.cross_entropy(model(x[idx]), y[idx])\n",
            "            loss = F.cross_entropy(model(x[idx]), y[idx])\n",
        )
    ],
}

# wrong version -> the hidden checks its bug must fail (others may fail too): each failed
# them on grading seeds 5, 6 and 7
CAUGHT_BY: dict[str, list[str]] = {
    "accumulation_divided_by_k": ["test_accumulated_grads_unequal_micro_batches"],
    "accumulation_not_divided": [
        "test_accumulated_grads_equal_micro_batches",
        "test_accumulated_grads_unequal_micro_batches",
    ],
    "accumulation_stale_gradients": [
        "test_accumulated_grads_equal_micro_batches",
        "test_accumulated_grads_unequal_micro_batches",
    ],
    "adam_step_forgotten": ["test_adam_state_bytes"],
    "checkpoint_every_module": ["test_checkpointing_saves_memory"],
    "checkpoint_reentrant": [
        "test_checkpointing_same_gradients",
        "test_checkpointing_saves_memory",
    ],
    "checkpoint_saves_everything": ["test_checkpointing_saves_memory"],
    "checkpoint_sequential_last_segment_plain": ["test_checkpointing_saves_memory"],
    "distill_drops_last_partial_batch": ["test_distill_follows_the_recipe"],
    "distill_ignores_teacher": [
        "test_distill_beats_labels_only",
        "test_distill_follows_the_recipe",
    ],
    "kl_mean_reduction": [
        "test_kd_loss_gradient",
        "test_kd_loss_special_cases",
        "test_kd_loss_unlabelled_rows",
        "test_kd_loss_value",
    ],
    "kl_reversed": [
        "test_kd_loss_gradient",
        "test_kd_loss_special_cases",
        "test_kd_loss_unlabelled_rows",
        "test_kd_loss_value",
    ],
    "pure_bf16": ["test_forward_bf16_dtypes"],
    "saved_bytes_count_parameters": ["test_saved_activation_bytes"],
    "t_squared_missing": [
        "test_kd_loss_gradient",
        "test_kd_loss_unlabelled_rows",
        "test_kd_loss_value",
    ],
    "teacher_not_detached": ["test_kd_loss_gradient"],
    "train_bf16_no_zero_grad": ["test_train_bf16", "test_train_bf16_follows_the_recipe"],
    "train_bf16_without_autocast": ["test_train_bf16"],
    "unlabelled_rows_as_class_0": [
        "test_kd_loss_gradient",
        "test_kd_loss_unlabelled_rows",
        "test_kd_loss_value",
    ],
}
