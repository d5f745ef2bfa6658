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
    # export_program does not handle a batch-1 example: the dynamic batch is specialized (P7)
    "batch_one_not_handled": [
        ("    if example.shape[0] < 2:", "    if False:"),
    ],
    # onnx_files: the external data file's location taken as it is, not beside the model
    "external_data_beside_the_notebook": [
        ("        file = os.path.join(folder, location)\n", "        file = location\n"),
    ],
    # to_onnx: every weight inline in the .onnx file, not in external data as the task says
    "onnx_without_external_data": [
        ("dynamo=True, external_data=True, verbose=False)\n    return onnx_files(path)",
         "dynamo=True, external_data=False, verbose=False)\n    return onnx_files(path)"),
    ],
    # run_onnx: ONNX Runtime's default thread pools, not one thread
    "run_onnx_default_threads": [
        ("    options.intra_op_num_threads = 1\n    options.inter_op_num_threads = 1\n"
         "    session = ort.InferenceSession(path,",
         "    session = ort.InferenceSession(path,"),
    ],
    # run_onnx: the last output instead of the first (the same for a one-output model)
    "run_onnx_last_output": [
        ("return torch.from_numpy(session.run(None, feed)[0])",
         "return torch.from_numpy(session.run(None, feed)[-1])"),
    ],
    # quantize_onnx: one scale per output channel, where the task asks for per-tensor weights
    "int8_per_channel": [
        ("quant_format=QuantFormat.QDQ, per_channel=False,",
         "quant_format=QuantFormat.QDQ, per_channel=True,"),
    ],
    # onnx_files guesses the exporter's naming instead of reading the references: <path>.data
    # when such a file exists (right for PyTorch's exports with weights outside, wrong for any
    # other name, for several files, and for the empty .data of a model with none)
    "onnx_files_guesses_data_name": [
        ("""    model = onnx.load(path, load_external_data=False)
    folder = os.path.dirname(path)
    files = [path]
    for tensor in model.graph.initializer:""",
         """    files = [path]
    if os.path.exists(path + ".data"):
        files.append(path + ".data")
    return files
    for tensor in onnx.load(path, load_external_data=False).graph.initializer:"""),
    ],
    # onnx_files lists a file once per initializer stored in it, not once
    "onnx_files_listed_per_tensor": [
        ("        if file not in files:\n            files.append(file)\n",
         "        files.append(file)\n"),
    ],
    # onnx_files collects the files in a set and sorts them: each once, but not in the order
    # first referenced
    "onnx_files_sorted": [
        ("            files.append(file)\n    return files\n",
         "            files.append(file)\n    return [path] + sorted(set(files[1:]))\n"),
    ],
    # to_onnx lists the .data file the exporter writes, whether or not the model references it
    "to_onnx_lists_the_data_file": [
        ("    torch.onnx.export(ep, f=path, dynamo=True, external_data=True, verbose=False)\n"
         "    return onnx_files(path)",
         "    torch.onnx.export(ep, f=path, dynamo=True, external_data=True, verbose=False)\n"
         "    return [path, path + \".data\"]"),
    ],
    # run_onnx feeds x as it comes: a float64 input reaches a float32 model
    "run_onnx_input_not_float32": [
        ("feed = {session.get_inputs()[0].name: x.detach().cpu().numpy().astype(np.float32)}",
         "feed = {session.get_inputs()[0].name: x.detach().cpu().numpy()}"),
    ],
    # runtime_ops names every operator by its op_type, the domain dropped ("FusedConv")
    "runtime_ops_without_domain": [
        ("    return dict(Counter(node.op_type if node.domain in (\"\", \"ai.onnx\")\n"
         "                        else f\"{node.domain}:{node.op_type}\" for node in graph.node))",
         "    return dict(Counter(node.op_type for node in graph.node))"),
    ],
    # runtime_ops names by op_type only the nodes of the empty domain: a node of "ai.onnx", the
    # same domain under its other name, comes out as "ai.onnx:Conv"
    "runtime_ops_ai_onnx_domain_kept": [
        ('node.op_type if node.domain in ("", "ai.onnx")', 'node.op_type if node.domain == ""'),
    ],
    # runtime_ops counts the nodes of the file, not of the graph the session runs
    "runtime_ops_counts_the_file": [
        ("graph = onnx.load(options.optimized_model_filepath, load_external_data=False).graph",
         "graph = onnx.load(path, load_external_data=False).graph"),
    ],
    # runtime_ops never sets the level: every call gets ONNX Runtime's default, "all"
    "runtime_ops_level_ignored": [
        ("suits this CPU only\n    options.graph_optimization_level = ORT_LEVELS[level]\n",
         "suits this CPU only\n"),
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
    "external_data_missed": ["test_onnx_files_and_size"],
    "float_as_int8": ["test_int8_model_stores_int8_weights_and_is_small"],
    "count_ops_counts_every_node": ["test_count_ops_of_exported_program"],
    "batch_one_not_handled": ["test_count_ops_of_exported_program"],
    "external_data_beside_the_notebook": ["test_onnx_files_and_size"],
    "onnx_without_external_data": ["test_onnx_files_and_size"],
    "run_onnx_default_threads": ["test_run_onnx_first_output_one_thread"],
    "run_onnx_last_output": ["test_run_onnx_first_output_one_thread"],
    "int8_per_channel": ["test_int8_model_stores_int8_weights_and_is_small"],
    "onnx_files_guesses_data_name": [
        "test_onnx_files_reads_the_references",
        "test_to_onnx_lists_only_referenced_files",
    ],
    "onnx_files_listed_per_tensor": ["test_onnx_files_reads_the_references"],
    "onnx_files_sorted": ["test_onnx_files_reads_the_references"],
    "to_onnx_lists_the_data_file": ["test_to_onnx_lists_only_referenced_files"],
    "run_onnx_input_not_float32": ["test_run_onnx_first_output_one_thread"],
    "runtime_ops_without_domain": [
        "test_runtime_ops_on_drawn_graphs",
        "test_runtime_ops_of_your_models",
    ],
    "runtime_ops_ai_onnx_domain_kept": ["test_runtime_ops_on_drawn_graphs"],
    "runtime_ops_counts_the_file": [
        "test_runtime_ops_on_drawn_graphs",
        "test_runtime_ops_of_your_models",
    ],
    "runtime_ops_level_ignored": [
        "test_runtime_ops_on_drawn_graphs",
        "test_runtime_ops_of_your_models",
    ],
}
