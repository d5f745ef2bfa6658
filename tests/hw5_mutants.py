"""Wrong versions of the homework 5 reference notebook, to show the hidden checks catch them.

`MUTANTS[name]` is a list of `(old, new)` exact source-text replacements. Each `old` occurs
exactly once in the reference notebook's code cells taken together
(`solutions/hw5/hw5.ipynb`); apply every pair of a mutant to the cell that holds `old`.

`CAUGHT_BY[name]` names the hidden checks (`solutions/hw5/checks/test_hw5.py`) written to catch
that mutant: each of them must fail on it, whatever the draw.

Mutants that break a function the notebook's own self-check cell tests also make that cell
raise.
"""

from __future__ import annotations

MUTANTS: dict[str, list[tuple[str, str]]] = {
    # export_program: no dynamic_shapes, the batch is specialized to the example's (P7); the
    # ONNX export, run_onnx and the int8 calibration (batches of 64) inherit the static batch
    "static_batch": [
        (
            "    return torch.export.export(model, (example,), "
            'dynamic_shapes=({0: Dim("batch")},))\n',
            "    return torch.export.export(model, (example,))\n",
        )
    ],
    # export_program captures the model as given: a model left in train mode is exported with
    # BatchNorm normalizing by batch statistics and updating its running statistics
    "export_in_train_mode": [
        ("    model = copy.deepcopy(model).eval()\n", "    model = copy.deepcopy(model)\n")
    ],
    # fold_bn: PyTorch's default eps hard-coded instead of the layer's own
    "fold_default_eps": [
        ("torch.sqrt(bn.running_var + bn.eps)", "torch.sqrt(bn.running_var + 1e-5)")
    ],
    # to_onnx: only the .onnx file, its external data (the weights) missed in files and size
    "external_data_missed": [("    return onnx_files(path)\n", "    return [path]\n")],
    # quantize_onnx: the float model saved under the int8 name
    "float_as_int8": [
        (
            "        quantize_static(prepared, int8_path, TensorReader(input_name, calib_x),\n"
            "                        quant_format=QuantFormat.QDQ, per_channel=False,\n"
            "                        weight_type=QuantType.QInt8)\n",
            "        onnx.save(onnx.load(prepared), int8_path)\n",
        )
    ],
    # count_ops counts every node: placeholders (inputs, weights, buffers) as operators
    "count_ops_counts_every_node": [
        ('if node.op == "call_function"', 'if node.op != "output"')
    ],
}

# wrong version -> the hidden checks its bug must fail (others may fail too)
CAUGHT_BY: dict[str, list[str]] = {
    "static_batch": [
        "test_pt2_reloads_with_the_same_outputs",
        "test_onnx_runs_in_onnxruntime_with_the_same_outputs",
        "test_run_onnx",
        "test_int8_model_accuracy",
    ],
    # (the ONNX exporter itself turns a train-mode BatchNorm into an inference one)
    "export_in_train_mode": [
        "test_count_ops_of_exported_program",
        "test_pt2_reloads_with_the_same_outputs",
    ],
    "fold_default_eps": ["test_fold_bn", "test_fold_conv_bn"],
    "external_data_missed": ["test_onnx_files_and_size"],
    "float_as_int8": ["test_int8_model_stores_int8_weights_and_is_small"],
    "count_ops_counts_every_node": ["test_count_ops_of_exported_program"],
}
