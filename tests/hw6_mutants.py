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
            "loss = kd_loss(student(x[idx]), teacher_logits[idx], labels[idx], T=T, alpha=alpha)",
            "loss = kd_loss(student(x[idx]), teacher_logits[idx], labels[idx], T=T, alpha=0.0)",
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
    # checkpointed_forward cuts one module per segment and leaves the rest to the last one
    "checkpoint_uneven_segments": [
        (
            "bounds = [round(i * len(model) / segments) for i in range(segments + 1)]",
            "bounds = [*range(segments), len(model)]",
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
    # make_regressor: a 3x3 convolution with padding 1 (it keeps the map's size too)
    "regressor_3x3": [
        (
            "return nn.Conv2d(student_shape[0], teacher_shape[0], kernel_size=1)",
            "return nn.Conv2d(student_shape[0], teacher_shape[0], kernel_size=3, padding=1)",
        )
    ],
    # make_regressor without a bias
    "regressor_without_bias": [
        (
            "return nn.Linear(student_shape[0], teacher_shape[0])",
            "return nn.Linear(student_shape[0], teacher_shape[0], bias=False)",
        )
    ],
    # make_regressor maps the teacher's width to the student's (the two shapes swapped)
    "regressor_backwards": [
        (
            "return nn.Linear(student_shape[0], teacher_shape[0])",
            "return nn.Linear(teacher_shape[0], student_shape[0])",
        )
    ],
    # make_regressor never looks at the height and width: any two maps get a 1x1 conv
    "regressor_ignores_map_sizes": [
        (
            "len(student_shape) == len(teacher_shape) == 3 and student_shape[1:] == "
            "teacher_shape[1:]",
            "len(student_shape) == len(teacher_shape) == 3",
        )
    ],
    # hint_loss sums the squared errors instead of averaging them
    "hint_loss_sum": [
        (
            "F.mse_loss(regressor(student_features), teacher_features.detach())",
            'F.mse_loss(regressor(student_features), teacher_features.detach(), reduction="sum")',
        )
    ],
    # hint_loss as FitNets writes it: half the sum of squares per example, averaged over the batch
    "hint_loss_half_sum_per_example": [
        (
            "return F.mse_loss(regressor(student_features), teacher_features.detach())",
            "return 0.5 * (regressor(student_features) - teacher_features.detach()).pow(2)"
            ".flatten(1).sum(1).mean()",
        )
    ],
    # hint_loss detaches the student's features: the hint trains only the regressor
    "hint_loss_student_detached": [
        (
            "F.mse_loss(regressor(student_features), teacher_features.detach())",
            "F.mse_loss(regressor(student_features.detach()), teacher_features.detach())",
        )
    ],
    # hint_loss lets gradients flow into the teacher's features
    "hint_loss_teacher_not_detached": [
        (
            "F.mse_loss(regressor(student_features), teacher_features.detach())",
            "F.mse_loss(regressor(student_features), teacher_features)",
        )
    ],
    # distill_with_hints trains the student only: the regressor stays as it was initialised
    "hints_regressor_not_optimized": [
        (
            "opt = torch.optim.Adam([*student.parameters(), *regressor.parameters()], lr=lr)",
            "opt = torch.optim.Adam(student.parameters(), lr=lr)",
        )
    ],
    # distill_with_hints detaches the hooked features: no hint gradient reaches the student
    "hints_features_detached": [
        ("caught.update(features=output)", "caught.update(features=output.detach())")
    ],
    # distill_with_hints forgets beta: the hint always weighs 1
    "hints_beta_forgotten": [("loss = loss + beta * hint_loss(", "loss = loss + hint_loss(")],
    # distill_with_hints leaves its hook on the student
    "hints_hook_left": [("    finally:\n        hook.remove()\n", "    finally:\n        pass\n")],
    # distill_with_hints with a second Adam for the regressor: two optimizer steps per batch
    "hints_two_optimizers": [
        (
            "    opt = torch.optim.Adam([*student.parameters(), *regressor.parameters()], lr=lr)\n",
            "    opt = torch.optim.Adam(student.parameters(), lr=lr)\n"
            "    regressor_opt = torch.optim.Adam(regressor.parameters(), lr=lr)\n",
        ),
        (
            "                loss.backward()\n                opt.step()\n"
            "                sched.step()\n    finally:",
            "                regressor_opt.zero_grad()\n"
            "                loss.backward()\n                opt.step()\n"
            "                regressor_opt.step()\n                sched.step()\n"
            "    finally:",
        ),
    ],
    # accumulated_grads zeroes the gradients inside the loop: only the last micro-batch remains
    "accumulation_zero_grad_inside_loop": [
        (
            "    model.zero_grad(set_to_none=True)\n    for xb, yb in zip(",
            "    for xb, yb in zip(",
        ),
        (
            "        loss = F.cross_entropy(model(xb), yb) * len(xb) / len(x)",
            "        model.zero_grad(set_to_none=True)\n"
            "        loss = F.cross_entropy(model(xb), yb) * len(xb) / len(x)",
        ),
    ],
    # accumulated_grads adds up the micro-batches' losses and calls backward once: the right
    # gradients, but every micro-batch's activations alive at once (what accumulation avoids)
    "accumulation_one_backward": [
        (
            "    model.zero_grad(set_to_none=True)\n    for xb, yb in zip(",
            "    model.zero_grad(set_to_none=True)\n    total = 0\n    for xb, yb in zip(",
        ),
        (
            "        loss.backward()\n    return {name: p.grad",
            "        total = total + loss\n    total.backward()\n    return {name: p.grad",
        ),
    ],
    # distill with AdamW (weight decay 0.01): not the recipe's optimizer
    "distill_adamw": [
        (
            "    opt = torch.optim.Adam(student.parameters(), lr=lr)\n    sched",
            "    opt = torch.optim.AdamW(student.parameters(), lr=lr)\n    sched",
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
    "accumulation_one_backward": [
        "test_accumulated_grads_equal_micro_batches",
        "test_accumulated_grads_unequal_micro_batches",
    ],
    "accumulation_zero_grad_inside_loop": [
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
    "checkpoint_uneven_segments": ["test_checkpointing_saves_memory"],
    "checkpoint_sequential_last_segment_plain": ["test_checkpointing_saves_memory"],
    "distill_adamw": ["test_distill_follows_the_recipe"],
    "distill_drops_last_partial_batch": ["test_distill_follows_the_recipe"],
    "distill_ignores_teacher": [
        "test_distill_beats_labels_only",
        "test_distill_follows_the_recipe",
    ],
    "hint_loss_half_sum_per_example": ["test_hint_loss_gradient", "test_hint_loss_value"],
    "hint_loss_student_detached": ["test_hint_loss_gradient"],
    "hint_loss_sum": ["test_hint_loss_gradient", "test_hint_loss_value"],
    "hint_loss_teacher_not_detached": ["test_hint_loss_gradient"],
    "hints_beta_forgotten": ["test_distill_with_hints_follows_the_recipe"],
    "hints_features_detached": ["test_distill_with_hints_follows_the_recipe"],
    "hints_hook_left": ["test_distill_with_hints_follows_the_recipe"],
    "hints_regressor_not_optimized": ["test_distill_with_hints_follows_the_recipe"],
    "hints_two_optimizers": ["test_distill_with_hints_follows_the_recipe"],
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
    "regressor_3x3": ["test_make_regressor"],
    "regressor_backwards": ["test_make_regressor"],
    "regressor_ignores_map_sizes": ["test_make_regressor_refuses_shapes_it_cannot_map"],
    "regressor_without_bias": ["test_make_regressor"],
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
