"""Wrong versions of the homework 1 reference notebook, to show the hidden checks catch them.

`MUTANTS[name]` is a list of `(old, new)` exact source-text replacements. Each `old` occurs
exactly once in the reference notebook's code cells taken together
(`solutions/hw1/hw1.ipynb`); apply every pair of a mutant to the cell that holds `old`.

`CONSTANTS_SOURCE` is the "hard-coded answers" student: one code cell that redefines every
graded function to return the expected value of its first public check case
(`assignments/hw1/checks/test_hw1_public.py`) whatever its arguments. It is meant to be
appended as the last code cell of the reference notebook (later definitions win); it also runs
on its own, since it imports what it uses. `MUTANTS["constants"]` is empty and
`apply_mutant(cells, "constants")` does the appending.

Every mutant must lose points under `solutions/hw1/checks/test_hw1.py`. Mutants that break a
function the notebook's own self-check cell tests also make that cell raise.

`CONSTANTS_SOURCE` lives in `solutions/hw1/audit_constants.py`, which `grader audit` reads too.
"""

from __future__ import annotations

from conftest import constants_source

from grader.harness import replaced

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
    # returns the public checks' expected values: see CONSTANTS_SOURCE
    "constants": [],
}

CONSTANTS_SOURCE = constants_source("hw1")  # solutions/hw1/audit_constants.py


def apply_mutant(code_cells: list[str], name: str) -> list[str]:
    """The reference notebook's code cells with mutant `name` applied (a new list)."""
    return replaced(code_cells, MUTANTS[name], f"mutant {name!r}",
                    CONSTANTS_SOURCE if name == "constants" else None)
