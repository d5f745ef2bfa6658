"""Hidden checks for homework 5: capture, export to ONNX, run, what the runtime runs, quantize,
prove parity.

The grader never trusts a number or an output the notebook reports. It asks the student's
functions to export models it chose (weights, example batch, file names drawn per run), then
loads and runs the files they wrote itself, in a separate sandboxed process that holds no
secrets (``student.judge``): ``torch.export.load`` may unpickle, so it runs there, and it runs
with ``torch.load`` forced to ``weights_only=True``, so a ``.pt2`` that needs the unsafe loader
fails its check. The labels of the test split never leave the grader: the judge gets the
test images only and hands back logits; accuracy and parity are computed here, against a model
the grader rebuilt from the weights it sent. ONNX models the grader writes itself (drawn chains
of layers, their weights in external files of drawn names) are built in the grader's process and
only their bytes are sent to the kernel; what the grader measures on them (ONNX Runtime's
optimized graph) it measures on its own copy of those bytes, never on a file the kernel holds.

Conventions (stated in the notebook): export in eval mode with a dynamic batch dimension;
parity within |a - b| <= 1e-4 (1 + max |b|) at batch 1 and at a batch size the export never saw;
an ONNX model is its file plus every external data file its initializers reference, read from
the references, in the order first referenced; sizes are bytes of the files that exist; the
operators the runtime runs are the nodes of the graph ONNX Runtime writes to
``optimized_model_filepath`` at a level, ``op_type`` for ONNX's own domain, ``domain:op_type``
otherwise; int8 means the weights are stored as 8-bit integers.

The export checks share one set of artifacts per submission (one save_pt2, two to_onnx, one
quantize_onnx call, and one judge process for all their files, started when a check first
needs it), held by the session-scoped fixture `shared`: exporting to ONNX costs seconds and the
judge starts a fresh Python, so each check reads its part of that shared work. Its draws come
from the run's seed, like every check's. The ONNX files go into a sub-folder of the working
folder (external data lies beside its model, not beside the notebook).
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
import warnings
from collections import Counter
from typing import Any

import pytest
import torch
from torch import nn
from torch.export import Dim

import nncourse
from grader.checks import (
    StudentError,
    changed_modes,
    changed_state,
    demanded,
    kit_model,
    layer,
    one_thread,
    oracles_agree,
    seq,
)

TOLERANCE = 1e-4  # |a - b| <= TOLERANCE * (1 + max |b|); the reference is 100x inside it
INT8_ACCURACY_MARGIN = 0.02  # measured: int8 = fp32 on the kit's 300 test images, 40 draws
INT8_SIZE_FRACTION = 0.5  # of 4 bytes per parameter; measured 0.40 (16-32-64), 0.29 (32-64-128)
EXPORT_TIMEOUT = 120  # seconds for a call that exports (the ONNX exporter is slow when cold)
# The int8 accuracy depends on the draw (the model, its classifier's rescaling, the calibration
# images): the margin was met on the draws measured, which promises nothing on the next one.
# When the student's int8 model falls short, the grader quantizes the same model on the same
# calibration images itself and demands no more than that reaches, less REFERENCE_MARGIN
# (grader.checks.demanded).
REFERENCE_MARGIN = 0.01

# ------------------------------------------------------------------------------------------
# Oracles and helpers


def _close(got: torch.Tensor, expected: torch.Tensor) -> float | None:
    """None when `got` matches `expected` within the tolerance (relative to the largest
    output: rounding in float32 scales with it), else the largest difference."""
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return float("inf")
    diff = float((got.double() - expected.double()).abs().max())
    return None if diff <= TOLERANCE * (1 + float(expected.abs().max())) else diff


def _shape(value: Any) -> Any:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


# Operators torch.export records (training IR) for each layer of an eval-mode model.
OPS = {"Conv2d": "aten.conv2d.default", "BatchNorm2d": "aten.batch_norm.default",
       "ReLU": "aten.relu.default", "ReLU6": "aten.hardtanh.default",
       "GELU": "aten.gelu.default", "MaxPool2d": "aten.max_pool2d.default",
       "AdaptiveAvgPool2d": "aten.adaptive_avg_pool2d.default",
       "Flatten": "aten.flatten.using_ints", "Linear": "aten.linear.default"}


def _local_ops(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """The grader's own count: export in eval mode with a dynamic batch, count call_functions."""
    ep = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: Dim("batch")},))
    counts: dict[str, int] = {}
    for node in ep.graph.nodes:
        if node.op == "call_function":
            counts[str(node.target)] = counts.get(str(node.target), 0) + 1
    return counts


def _draw_stack(rng: random.Random, in_channels: int = 1) -> list[tuple[str, tuple, dict]]:
    """A random conv stack for 8x8 inputs: conv blocks (BatchNorm after some convs, an
    activation), maybe a max-pool, then global pooling and a Linear."""
    specs: list[tuple[str, tuple, dict]] = []
    c = in_channels
    for _ in range(rng.randint(2, 4)):
        out, k = rng.choice([3, 4, 6, 8]), rng.choice([1, 3])
        specs.append(("Conv2d", (c, out, k), {"padding": k // 2, "bias": rng.random() < 0.5}))
        if rng.random() < 0.7:
            specs.append(("BatchNorm2d", (out,), {}))
        specs.append((rng.choice(["ReLU", "ReLU6", "GELU"]), (), {}))
        c = out
    if rng.random() < 0.5:
        specs.insert(rng.randrange(1, len(specs) + 1), ("MaxPool2d", (2,), {}))
    if not any(name == "BatchNorm2d" for name, _, _ in specs):
        specs.insert(1, ("BatchNorm2d", (specs[0][1][1],), {}))
    return specs + [("AdaptiveAvgPool2d", (1,), {}), ("Flatten", (), {}),
                    ("Linear", (c, rng.randint(2, 12)), {})]


def _describe(specs: list[tuple[str, tuple, dict]]) -> str:
    return ", ".join(f"{name}{args}" for name, args, _ in specs)


def _numel(dims: list[int]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


# ------------------------------------------------------------------------------------------
# The shared artifacts: one save_pt2, one to_onnx, one quantize_onnx, one judge per run

JUDGE = r'''
import os

import torch

_torch_load = torch.load


def _safe_load(*args, **kwargs):
    # torch.export.load falls back to torch.load(weights_only=False) (it unpickles) when the
    # safe load fails: here every load is the safe one, so such a file fails to load.
    kwargs["weights_only"] = True
    return _torch_load(*args, **kwargs)


torch.load = _safe_load


def _attempt(fn, *args):
    try:
        return {"ok": True, "value": fn(*args)}
    except Exception as exc:  # the file's fault, reported back as text
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:600]}


def _tensors(graph):
    # every tensor stored in a graph: initializers, node attributes, subgraphs
    import onnx

    found = list(graph.initializer)
    found += [s.values for s in graph.sparse_initializer]
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                found.append(attr.t)
            found.extend(attr.tensors)
            if attr.type == onnx.AttributeProto.GRAPH:
                found += _tensors(attr.g)
            for sub in attr.graphs:
                found += _tensors(sub)
    return found


def _inspect(path):
    import onnx

    model = onnx.load(path, load_external_data=False)
    tensors, locations = [], []
    # [initializer dims, scale dims or None] of each DequantizeLinear fed by an initializer
    stored = {t.name: t for t in model.graph.initializer}
    dequantized = [[list(stored[node.input[0]].dims),
                    list(stored[node.input[1]].dims) if node.input[1] in stored else None]
                   for node in model.graph.node
                   if node.op_type == "DequantizeLinear" and node.input[0] in stored]
    for tensor in _tensors(model.graph):
        numel = 1
        for d in tensor.dims:
            numel *= int(d)
        tensors.append([int(tensor.data_type), numel])
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location" and entry.value not in locations:
                    locations.append(entry.value)
    return {"tensors": tensors, "locations": locations, "dequantized": dequantized,
            "ops": sorted({node.op_type for node in model.graph.node})}


def _session(path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _run_session(session, x):
    feed = {session.get_inputs()[0].name: x.numpy()}
    return torch.from_numpy(session.run(None, feed)[0]).clone()


def _runtime_ops(path, level):
    # the nodes of the graph ONNX Runtime writes after its optimizations at `level`
    import tempfile
    from collections import Counter

    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.graph_optimization_level = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    with tempfile.TemporaryDirectory() as tmp:
        options.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath, load_external_data=False).graph
    return dict(Counter(node.op_type if node.domain in ("", "ai.onnx")
                        else f"{node.domain}:{node.op_type}" for node in graph.node))


def _levels(path, levels):
    return {level: _runtime_ops(path, level) for level in levels}


def judge(folder, inputs):
    result = {}
    if inputs["pt2"]:
        loaded = _attempt(lambda: torch.export.load(os.path.join(folder, inputs["pt2"])).module())
        result["pt2"] = {"load": {k: v for k, v in loaded.items() if k != "value"}}
        if loaded["ok"]:
            with torch.no_grad():
                for key in ("x1", "x2"):
                    result["pt2"][key] = _attempt(lambda x: loaded["value"](x).clone(), inputs[key])
    if inputs["onnx"]:
        path = os.path.join(folder, inputs["onnx"])
        opened = _attempt(_session, path)
        result["onnx"] = {"load": {k: v for k, v in opened.items() if k != "value"},
                          "inspect": _attempt(_inspect, path)}
        if opened["ok"]:
            for key in ("x1", "x2"):
                result["onnx"][key] = _attempt(_run_session, opened["value"], inputs[key])
            result["onnx"]["runtime"] = _attempt(_levels, path, inputs["levels"])
    if inputs["int8"]:
        path = os.path.join(folder, inputs["int8"])
        result["int8"] = {"inspect": _attempt(_inspect, path)}
        opened = _attempt(_session, path)
        result["int8"]["load"] = {k: v for k, v in opened.items() if k != "value"}
        if opened["ok"]:
            result["int8"]["test"] = _attempt(_run_session, opened["value"], inputs["test"])
            result["int8"]["runtime"] = _attempt(_levels, path, inputs["levels"])
    if inputs["inline"]:
        path = os.path.join(folder, inputs["inline"])
        opened = _attempt(_session, path)
        result["inline"] = {"load": {k: v for k, v in opened.items() if k != "value"},
                            "inspect": _attempt(_inspect, path)}
    return result
'''

def _call(student, name: str, *args: Any, inspect: bool = False) -> dict[str, Any]:
    """A student call whose failure is recorded, not raised: each check reports its own part."""
    slow = student.with_timeout(EXPORT_TIMEOUT)
    try:
        if inspect:
            value, after = slow.call_inspect(name, *args)
            return {"ok": True, "value": value, "after": after}
        return {"ok": True, "value": slow.call(name, *args)}
    except StudentError as exc:
        return {"ok": False, "error": str(exc)}


def _fresh_tag(rng: random.Random, existing: dict[str, int]) -> str:
    """A file-name tag no file in the working folder uses yet (a regrade's folder is fresh;
    a live kernel graded twice keeps the files of the first run)."""
    while True:
        tag = f"{rng.randrange(16**6):06x}"
        if not any(f"grader_{tag}" in name for name in existing):
            return tag


def _make_folder(folder: str) -> None:
    """Run in the kernel: the sub-folder the grader's file names point into."""
    import os

    os.makedirs(folder, exist_ok=True)


@pytest.fixture(scope="session")
def shared(student, grading_seed: int) -> dict[str, Any]:
    """This submission's artifacts, built once and read by every export check."""
    rng = random.Random(f"{grading_seed}:hw5-artifacts")
    torch_rng = torch.Generator().manual_seed(rng.getrandbits(62))
    x_train, _, x_test, y_test = nncourse.load_digits_split()

    # a shipped CNN with its classifier rescaled (same predictions, logits no file holds)
    name = rng.choice(["cnn_16_32_64", "cnn_32_64_128"])
    channels = tuple(int(c) for c in name.split("_")[1:])
    model = nncourse.load_pretrained(name)
    scale, shift = rng.uniform(0.5, 2.0), rng.uniform(-1.0, 1.0)
    with torch.no_grad():
        model.fc.weight.mul_(scale)
        model.fc.bias.mul_(scale).add_(shift)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    spec = kit_model("make_cnn", channels=channels, state_dict=state, training=True)

    example = torch.rand(rng.randint(1, 4), 1, 8, 8, generator=torch_rng)
    batch2 = rng.choice([b for b in range(5, 18) if b != example.shape[0]])
    x1 = torch.rand(1, 1, 8, 8, generator=torch_rng)
    x2 = torch.rand(batch2, 1, 8, 8, generator=torch_rng)
    x3 = torch.rand(rng.choice([b for b in range(2, 12) if b not in (example.shape[0], batch2)]),
                    1, 8, 8, generator=torch_rng)
    calib = x_train[torch.randperm(len(x_train), generator=torch_rng)[:256]]

    with torch.no_grad():
        reference = {"x1": model(x1), "x2": model(x2), "x3": model(x3), "test": model(x_test)}
    fp32_accuracy = nncourse.evaluate(model, x_test, y_test)

    shared: dict[str, Any] = {
        "state": state, "channels": channels, "example": example, "calib": calib,
        "example_batch": example.shape[0],
        "batch2": batch2, "x3": x3, "reference": reference, "fp32_accuracy": fp32_accuracy,
        "labels": y_test, "params": sum(p.numel() for p in model.parameters()),
        "weights": sum(m.weight.numel() for m in model.modules()
                       if isinstance(m, (nn.Conv2d, nn.Linear))),
    }
    files = [_files(student)]
    tag = _fresh_tag(rng, files[0])
    # the ONNX files in a sub-folder: an external data file lies beside its model
    names = {"pt2": f"grader_{tag}.pt2", "onnx": f"grader_{tag}/model.onnx",
             "int8": f"grader_{tag}/model_int8.onnx", "inline": f"grader_{tag}/small.onnx"}
    shared["names"] = names
    # a model whose every tensor takes at most 96 bytes: the exporter keeps them all inline
    # (it moves a tensor out above 256 bytes) and leaves an empty small.onnx.data beside it
    width, classes = rng.randint(2, 4), rng.randint(2, 6)
    small = seq(layer("Conv2d", 1, width, 1), layer("ReLU"), layer("AdaptiveAvgPool2d", 1),
                layer("Flatten"), layer("Linear", width, classes), training=True)
    with contextlib.suppress(StudentError):  # a broken kernel: each call records its failure
        student.drive(_make_folder, f"grader_{tag}")

    shared["pt2"] = _call(student, "save_pt2", spec, example, names["pt2"], inspect=True)
    files.append(_files(student))
    shared["onnx"] = _call(student, "to_onnx", spec, example, names["onnx"])
    files.append(_files(student))
    shared["int8"] = _call(student, "quantize_onnx", names["onnx"], names["int8"], calib)
    files.append(_files(student))
    shared["inline"] = _call(student, "to_onnx", small, example, names["inline"])
    files.append(_files(student))
    # before, after save_pt2, after to_onnx, after quantize_onnx, after the small to_onnx
    shared["files"] = files

    # judged when a check first needs it, every file at once (one judge process per run)
    wanted = {k: (v if v in files[-1] else "") for k, v in names.items()}
    shared["judge_inputs"] = {**wanted, "x1": x1, "x2": x2, "test": x_test, "levels": LEVELS}
    return shared


def _files(student) -> dict[str, int]:
    """The working folder's files, or none when it cannot be read (over the size limit)."""
    try:
        return student.files()
    except StudentError:
        return {}


def _need(shared: dict[str, Any], what: str, call: str) -> None:
    """The part of the shared work a check builds on, or a failure that says what broke."""
    if not shared[what]["ok"]:
        raise AssertionError(f"{call} failed: {shared[what]['error']}")


def _judged(student, shared: dict[str, Any], what: str, file: str) -> dict[str, Any]:
    """The judge's verdict on one of the shared files (the judge runs once, on all of them)."""
    if file not in shared["files"][-1]:
        raise AssertionError(f"{file} does not exist in the notebook's folder after the call")
    if "judged" not in shared and "judge_error" not in shared:
        try:
            shared["judged"] = student.judge(JUDGE, shared["judge_inputs"], timeout=180)
        except StudentError as exc:
            shared["judge_error"] = str(exc)
    if "judge_error" in shared:
        raise AssertionError(f"loading the files failed: {shared['judge_error']}")
    part = shared.get("judged", {}).get(what)
    if not isinstance(part, dict):
        raise AssertionError(f"{file} could not be judged")
    if not part["load"]["ok"]:
        raise AssertionError(f"{file} does not load (with the safe loader): "
                             f"{part['load']['error']}")
    return part


def _check_parity(student, shared: dict[str, Any], what: str, call: str, runtime: str) -> None:
    file = shared["names"][what]
    part = _judged(student, shared, what, file)
    for key, batch in (("x1", 1), ("x2", shared["batch2"])):
        run = part[key]
        assert run["ok"], (
            f"{file} written by {call} fails at batch {batch} (the example had batch "
            f"{shared['example_batch']}): {run['error']}. The batch dimension must be dynamic."
        )
        expected = shared["reference"][key]
        error = _close(run["value"], expected)
        assert error is None, (
            f"{file} run with {runtime} at batch {batch} should give the outputs of the model "
            f"in eval mode (shape {tuple(expected.shape)}, within {TOLERANCE:g}); got shape "
            f"{_shape(run['value'])}, largest difference {error:.3g}. Export the model in eval "
            f"mode, with the weights it was given."
        )


# ------------------------------------------------------------------------------------------
# ONNX models of the grader's own: drawn chains of layers, built here, their bytes sent

LEVELS = ["disabled", "basic", "extended", "all"]
# What ONNX Runtime 1.32's CPU graph optimizations do to the chains drawn below (the notebook's
# table), the grader's second oracle beside ONNX Runtime itself (the machine-specific level
# "all" has ONNX Runtime alone): "basic" drops Identity, folds a BatchNormalization, or a Mul
# or Add by a per-channel constant, into the Conv before it, and merges MatMul + Add into Gemm;
# "extended" also fuses a Conv or a Gemm with the activation after it (each with its own list).
FOLDED_INTO_CONV = ("BatchNormalization", "Add", "Mul")
CONV_ACTIVATIONS = ("Relu", "Sigmoid", "Tanh", "LeakyRelu", "Clip", "Elu")
FUSED_INTO_CONV = ("Relu", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid", "Clip")
GEMM_ACTIVATIONS = ("Relu", "Tanh", "Clip")
FUSED_INTO_GEMM = ("Relu", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid", "Elu")


def _draw_chain(rng: random.Random) -> list[str]:
    """The operators of a chain for an image: conv blocks (maybe a BatchNormalization, Add or
    Mul by a constant after the conv, maybe an activation, then maybe an Identity or a MaxPool
    with something after it), global pooling, Flatten, a Gemm or MatMul + Add, maybe an
    activation. Maybe a BatchNormalization first, which nothing folds."""
    chain = ["BatchNormalization"] if rng.random() < 0.3 else []
    for _ in range(rng.randint(1, 3)):
        chain.append("Conv")
        if rng.random() < 0.6:
            chain.append(rng.choice(FOLDED_INTO_CONV))
        if rng.random() < 0.8:
            chain.append(rng.choice(CONV_ACTIVATIONS))
        extra = rng.random()
        if extra < 0.25:
            chain.append("Identity")
        elif extra < 0.45:
            chain.append("MaxPool")
            if rng.random() < 0.5:
                chain.append(rng.choice(["Relu", "BatchNormalization", "Identity"]))
    chain += ["GlobalAveragePool", "Flatten"]
    chain += ["Gemm"] if rng.random() < 0.5 else ["MatMul", "Add"]
    if rng.random() < 0.7:
        chain.append(rng.choice(GEMM_ACTIVATIONS))
    return chain


def _rule_ops(chain: list[str], level: str) -> dict[str, int]:
    """The operators ONNX Runtime runs for `chain` at `level`, by the table."""
    ops = list(chain)
    if level == "disabled":
        return dict(Counter(ops))
    folded: list[str] = []
    for op in ops:
        if op == "Identity":
            continue
        if folded and folded[-1] == "Conv" and op in FOLDED_INTO_CONV:
            continue
        if folded and folded[-1] == "MatMul" and op == "Add":
            folded[-1] = "Gemm"
            continue
        folded.append(op)
    if level == "basic":
        return dict(Counter(folded))
    fused: list[str] = []
    for op in folded:
        if fused and fused[-1] == "Conv" and op in FUSED_INTO_CONV:
            fused[-1] = "com.microsoft:FusedConv"
        elif fused and fused[-1] == "Gemm" and op in FUSED_INTO_GEMM:
            fused[-1] = "com.microsoft:FusedGemm"
        else:
            fused.append(op)
    return dict(Counter(fused))


def _build_chain(chain: list[str], rng: random.Random, torch_rng: torch.Generator) -> Any:
    """An onnx.ModelProto of `chain` (opset 17, weights inline as initializers), input
    ("batch", C, H, W) with C and H = W drawn, output ("batch", classes)."""
    from onnx import TensorProto, helper, numpy_helper

    c_in, size, classes = rng.randint(1, 3), rng.choice([6, 8]), rng.randint(2, 10)
    inits: list[Any] = []
    nodes: list[Any] = []

    def const(name: str, value: torch.Tensor) -> str:
        inits.append(numpy_helper.from_array(value.float().numpy(), name))
        return name

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=torch_rng)

    current, c, flat = "x", c_in, False
    for i, op in enumerate(chain):
        out, kwargs, inputs = f"t{i}", {}, [current]
        if op == "Conv":
            c_out, k = rng.choice([2, 3, 4, 6]), rng.choice([1, 3])
            inputs.append(const(f"conv{i}.weight", randn(c_out, c, k, k) / (c * k * k) ** 0.5))
            if rng.random() < 0.5:
                inputs.append(const(f"conv{i}.bias", randn(c_out) * 0.3))
            kwargs, c = {"pads": [k // 2] * 4}, c_out
        elif op == "BatchNormalization":
            inputs += [const(f"bn{i}.gamma", torch.rand(c, generator=torch_rng) + 0.5),
                       const(f"bn{i}.beta", randn(c) * 0.3), const(f"bn{i}.mean", randn(c) * 0.3),
                       const(f"bn{i}.var", torch.rand(c, generator=torch_rng) + 0.1)]
            kwargs = {"epsilon": rng.choice([1e-5, 1e-3])}
        elif op in ("Add", "Mul") and not flat:  # by a per-channel constant, after a conv
            inputs.append(const(f"{op.lower()}{i}", randn(c, 1, 1) * 0.3 + (op == "Mul")))
        elif op == "Add":  # the bias after MatMul
            inputs.append(const(f"fc{i}.bias", randn(classes) * 0.3))
        elif op == "Clip":
            inputs += [const(f"clip{i}.min", torch.tensor(0.0)),
                       const(f"clip{i}.max", torch.tensor(6.0))]
        elif op == "LeakyRelu":
            kwargs = {"alpha": 0.1}
        elif op == "MaxPool":
            kwargs = {"kernel_shape": [2, 2], "strides": [2, 2]}
        elif op == "Gemm":
            inputs += [const(f"fc{i}.weight", randn(classes, c) / c ** 0.5),
                       const(f"fc{i}.bias", randn(classes) * 0.3)]
            kwargs = {"transB": 1}
        elif op == "MatMul":
            inputs.append(const(f"fc{i}.weight", randn(c, classes) / c ** 0.5))
        flat = flat or op == "Flatten"
        nodes.append(helper.make_node(op, inputs, [out], **kwargs))
        current = out
    graph = helper.make_graph(
        nodes, "grader_chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", c_in, size, size])],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, ["batch", classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # a version every supported ONNX Runtime reads
    return model


def _externalize(model: Any, locations: dict[str, str]) -> dict[str, bytes]:
    """Move the initializers named in `locations` into external data files (each appended to
    its file, in the order of the initializers); return {location: the file's bytes}."""
    import onnx
    from onnx import numpy_helper

    data: dict[str, bytearray] = {}
    for tensor in model.graph.initializer:
        if tensor.name not in locations:
            continue
        raw = numpy_helper.to_array(tensor).tobytes()
        blob = data.setdefault(locations[tensor.name], bytearray())
        entries = {"location": locations[tensor.name], "offset": str(len(blob)),
                   "length": str(len(raw))}
        blob += raw
        tensor.ClearField("raw_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in entries.items():
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    return {location: bytes(blob) for location, blob in data.items()}


def _model_bytes(model: Any, path: str, data: dict[str, bytes]) -> dict[str, bytes]:
    """{path: the model's bytes} and each external data file at its place beside the model."""
    folder = os.path.dirname(path)
    return {path: model.SerializeToString(),
            **{os.path.join(folder, location): blob for location, blob in data.items()}}


def _write_files(files: dict[str, torch.Tensor]) -> None:
    """Run in the kernel: write each file (relative path -> its bytes as a uint8 tensor)."""
    import os

    for name, content in files.items():
        os.makedirs(os.path.dirname(name) or ".", exist_ok=True)
        with open(name, "wb") as f:
            f.write(content.numpy().tobytes())


def _send(student, files: dict[str, bytes]) -> None:
    """Write the grader's files (an empty one included) into the kernel's working folder."""
    student.drive(_write_files, {name: torch.tensor(list(blob), dtype=torch.uint8)
                                 for name, blob in files.items()})


def _grader_runtime_ops(files: dict[str, bytes], path: str, level: str) -> dict[str, int]:
    """ONNX Runtime's optimized graph of the grader's own model (its bytes, written here into a
    folder of the grader's, never read back from the kernel), counted as the notebook says."""
    import onnx
    import onnxruntime as ort

    levels = {"disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    with tempfile.TemporaryDirectory() as tmp:
        for name, blob in files.items():
            os.makedirs(os.path.dirname(os.path.join(tmp, name)), exist_ok=True)
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(blob)
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.log_severity_level = 3  # "all" warns that its graph suits this CPU only
        options.graph_optimization_level = levels[level]
        options.optimized_model_filepath = os.path.join(tmp, "grader_optimized.onnx")
        ort.InferenceSession(os.path.join(tmp, path), options,
                             providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath, load_external_data=False).graph
    return dict(Counter(node.op_type if node.domain in ("", "ai.onnx")
                        else f"{node.domain}:{node.op_type}" for node in graph.node))


# ------------------------------------------------------------------------------------------
# 1. Capture: count_ops of export_program


def _count_exported_ops(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Run in the kernel: the student's count of the student's export."""
    return count_ops(export_program(model, example))  # noqa: F821 - the notebook's functions


@pytest.mark.points(3)
def test_count_ops_of_exported_program(student, rng, torch_rng):
    """count_ops(export_program(model, example)): {str(node.target): n} over call_function nodes
    of the eval-mode export; checked against the grader's own export of the same layers. One
    example has batch 1 (the notebook says any batch size, 1 included) and several channels,
    the other a batch of 2 to 5; one model comes in train mode, the other in eval mode."""
    modes = rng.sample([True, False], 2)
    for training, (batch, in_channels) in zip(
            modes, [(1, rng.randint(2, 3)), (rng.randint(2, 5), rng.randint(1, 3))], strict=True):
        specs = _draw_stack(rng, in_channels)
        local = nn.Sequential(*[getattr(nn, n)(*a, **k) for n, a, k in specs])
        example = torch.rand(batch, in_channels, 8, 8, generator=torch_rng)
        # the grader's own export traces a batch of 2 (sizes 0 and 1 are specialized)
        expected = _local_ops(local, torch.rand(2, in_channels, 8, 8, generator=torch_rng))
        table: dict[str, int] = {}
        for layer_name, _, _ in specs:
            table[OPS[layer_name]] = table.get(OPS[layer_name], 0) + 1
        oracles_agree(expected == table, f"export of {_describe(specs)}: {expected}")
        model = seq(*[layer(n, *a, **k) for n, a, k in specs], training=training)
        got = student.with_timeout(EXPORT_TIMEOUT).drive(_count_exported_ops, model, example)
        assert got == expected, (
            f"count_ops(export_program(Sequential({_describe(specs)}) in "
            f"{'train' if training else 'eval'} mode, an example of shape "
            f"{tuple(example.shape)})) should "
            f"be {expected} (call_function nodes of the eval-mode graph), got {got}"
        )


# ------------------------------------------------------------------------------------------
# 2. .pt2: saved, reloaded by the grader, same outputs at batch 1 and an unseen batch


@pytest.mark.slow_check
@pytest.mark.points(4)
def test_pt2_reloads_with_the_same_outputs(student, shared):
    """The .pt2 save_pt2 wrote, loaded with torch.export.load (safe loader) in the grader's
    judge, gives the eval-mode model's outputs at batch 1 and at a batch it never saw."""
    _need(shared, "pt2", "save_pt2")
    returned = shared["pt2"]["value"]
    assert returned == shared["names"]["pt2"], (
        f"save_pt2 should return the path it wrote, {shared['names']['pt2']!r}, got {returned!r}"
    )
    _check_parity(student, shared, "pt2", "save_pt2", "torch.export.load(...).module()")


@pytest.mark.slow_check
@pytest.mark.points(1)
def test_export_leaves_the_model_as_found(student, shared):
    """Exporting works on a copy: the caller's model keeps its train mode and its weights."""
    _need(shared, "pt2", "save_pt2")
    file = shared["names"]["pt2"]
    assert file in shared["files"][1], f"save_pt2 did not write {file}"
    after = shared["pt2"]["after"][0]
    in_eval = changed_modes(after, training=True)
    assert not in_eval, (
        f"the model was in train mode; after save_pt2 these modules are in eval mode: "
        f"{in_eval}. Export an eval-mode copy."
    )
    changed = changed_state(shared["state"], after)
    assert not changed, f"save_pt2 changed the caller's model: {changed}"


# ------------------------------------------------------------------------------------------
# 3. ONNX: parity in ONNX Runtime, files, sizes


@pytest.mark.slow_check
@pytest.mark.points(4)
def test_onnx_runs_in_onnxruntime_with_the_same_outputs(student, shared):
    """The ONNX model to_onnx wrote, run by the grader's judge in ONNX Runtime (CPU, one
    thread), gives the eval-mode model's outputs at batch 1 and at a batch it never saw."""
    _need(shared, "onnx", "to_onnx")
    _check_parity(student, shared, "onnx", "to_onnx", "ONNX Runtime")


def _model_files(file: str, inspected: dict[str, Any]) -> list[str]:
    """The files the ONNX model `file` consists of: itself, then the external data files its
    initializers reference (the judge read the references, in order), each once."""
    folder = os.path.dirname(file)
    return [file] + [os.path.normpath(os.path.join(folder, location))
                     for location in inspected["locations"]]


def _paths(returned: Any, call: str) -> list[str]:
    """A returned list of file paths, normalized (``./a`` is ``a``)."""
    assert isinstance(returned, list | tuple) and all(isinstance(p, str) for p in returned), (
        f"{call} should return a list of file paths, got {returned!r}"
    )
    return [os.path.normpath(p) for p in returned]


@pytest.mark.slow_check
@pytest.mark.points(3)
def test_onnx_files_and_size(student, shared):
    """to_onnx returns the files of the model it wrote (in a sub-folder), read from the model's
    references: the .onnx, then its external data, which holds the weights
    (external_data=True). artifact_size of them is the sum of the sizes of those files as they
    exist."""
    _need(shared, "onnx", "to_onnx")
    file = shared["names"]["onnx"]
    inspected = _judged(student, shared, "onnx", file)["inspect"]
    assert inspected["ok"], f"{file} is not a readable ONNX model: {inspected['error']}"
    assert inspected["value"]["locations"], (
        f"{file} should keep its weights in external data (export with external_data=True); "
        f"it references no external file"
    )
    expected = _model_files(file, inspected["value"])
    returned = _paths(shared["onnx"]["value"], "to_onnx")
    assert returned == expected, (
        f"to_onnx(..., {file!r}) should return {expected}: the model file, then the external "
        f"data files its initializers reference; got {list(shared['onnx']['value'])}"
    )
    now = shared["files"][-1]
    missing = [p for p in expected if p not in now]
    assert not missing, f"{file} references files that do not exist: {missing}"
    size = student.call("artifact_size", list(shared["onnx"]["value"]))
    total = sum(now[p] for p in expected)
    assert size == total, (
        f"artifact_size({list(shared['onnx']['value'])}) should be {total} bytes (the sum of "
        f"{', '.join(f'{p}: {now[p]}' for p in expected)}), got {size}"
    )


@pytest.mark.slow_check
@pytest.mark.points(1)
def test_to_onnx_lists_only_referenced_files(student, shared):
    """to_onnx of a model whose every tensor stays inline (none over 256 bytes) returns the
    .onnx alone: the empty .data file the exporter leaves beside it is referenced by nothing
    and is not part of the model (the notebook says so)."""
    _need(shared, "inline", "to_onnx")
    file = shared["names"]["inline"]
    inspected = _judged(student, shared, "inline", file)["inspect"]
    assert inspected["ok"], f"{file} is not a readable ONNX model: {inspected['error']}"
    expected = _model_files(file, inspected["value"])
    returned = _paths(shared["inline"]["value"], "to_onnx")
    beside = [p for p in shared["files"][-1] if p == f"{file}.data"]
    assert returned == expected, (
        f"to_onnx of a model with every tensor inline, at {file!r}, should return {expected}: "
        f"its initializers reference no external file"
        + (f" ({beside[0]} lies beside it, referenced by nothing)" if beside else "")
        + f"; got {list(shared['inline']['value'])}"
    )


def _external_plan(rng: random.Random, names: list[str], tag: str) -> dict[str, str]:
    """{initializer name: location} spreading the weights over two or three files of drawn names
    (maybe one in a sub-folder): the first three go to A, B, A (A is referenced again after B,
    and A comes after B in alphabetical order), later ones to any of the files or stay
    inline."""
    pool = [f"weights_{tag}.bin", f"data/part_{tag}.dat", f"{tag}.params", f"w_{tag}",
            f"tensors/{tag}.raw"]
    files = rng.sample(pool, rng.randint(2, 3))
    if files[0] < files[1]:
        files[0], files[1] = files[1], files[0]
    plan = {names[0]: files[0], names[1]: files[1], names[2]: files[0]}
    for name in names[3:]:
        if rng.random() < 0.7:
            plan[name] = rng.choice(files)
    return plan


@pytest.mark.points(3)
def test_onnx_files_reads_the_references(student, rng, torch_rng):
    """onnx_files(path) on models the grader wrote itself: [path], then every external data
    file its initializers reference, as os.path.join(folder of path, location), each once, in
    the order first referenced. Drawn: a model whose weights are spread over two or three files
    of the grader's naming (none of them <path>.data; one in a sub-folder; one referenced again
    after another), and a model with every weight inline beside a stale <path>.data that
    nothing references (the list is [path] alone)."""
    tag = f"{rng.randrange(16**6):06x}"
    folder = rng.choice([f"grader_files_{tag}", f"grader_files_{tag}/deeper"])
    spread = _build_chain(_draw_chain(rng), rng, torch_rng)
    names = [t.name for t in spread.graph.initializer]
    plan = _external_plan(rng, names, tag)
    spread_path = f"{folder}/net_{tag}.onnx"
    files = _model_bytes(spread, spread_path, _externalize(spread, plan))
    # every weight inline, in the working folder itself or in the sub-folder
    inline_path = rng.choice([f"grader_inline_{tag}.onnx", f"{folder}/inline_{tag}.onnx"])
    inline = _build_chain(_draw_chain(rng), rng, torch_rng)
    files.update(_model_bytes(inline, inline_path, {}))
    files[f"{inline_path}.data"] = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
    _send(student, files)
    locations = list(dict.fromkeys(plan[n] for n in names if n in plan))
    cases = [(spread_path, [spread_path] + [os.path.join(folder, loc) for loc in locations],
              f"its initializers reference {locations}, in that order"),
             (inline_path, [inline_path],
              f"every weight is inline; {inline_path}.data lies beside it, referenced by "
              f"nothing")]
    for path, expected, why in cases:
        got = student.call("onnx_files", path)
        expected = [os.path.normpath(p) for p in expected]
        assert _paths(got, "onnx_files") == expected, (
            f"onnx_files({path!r}) should be {expected} ({why}): the model file, then each "
            f"file its initializers reference, joined to the model's folder, each once, in "
            f"the order first referenced; got {got!r}"
        )


def _write_random_files(names: list[str], sizes: list[int]) -> None:
    """Run in the kernel: files of random bytes, sizes in bytes."""
    import os

    for name, size in zip(names, sizes, strict=True):
        os.makedirs(os.path.dirname(name) or ".", exist_ok=True)
        with open(name, "wb") as f:
            f.write(os.urandom(size))


@pytest.mark.points(2)
def test_artifact_size(student, rng):
    """The total size in bytes of the files listed, each file once."""
    tag = f"{rng.randrange(16**6):06x}"
    sizes = [rng.randint(0, 5000) for _ in range(rng.randint(2, 4))]
    names = [f"grader_size_{tag}_{i}.bin" for i in range(len(sizes))]
    names[-1] = f"grader_size_{tag}/part_{len(sizes)}.bin"  # one in a subfolder
    student.drive(_write_random_files, names, sizes)
    files = student.files()
    expected = sum(files[os.path.normpath(n)] for n in names)
    listed = names + [names[0]]  # a file listed twice counts once
    got = student.call("artifact_size", listed)
    assert got == expected, (
        f"artifact_size({listed}) should be {expected} bytes (files of {sizes} bytes, each "
        f"counted once), got {got}"
    )


@pytest.mark.slow_check
@pytest.mark.points(2)
def test_run_onnx(student, shared):
    """run_onnx(path, x) returns the first output of the ONNX model as a tensor (here on the
    file to_onnx wrote, at a batch size the export never saw)."""
    _need(shared, "onnx", "to_onnx")
    x3, expected = shared["x3"], shared["reference"]["x3"]
    got = student.with_timeout(60).call("run_onnx", shared["names"]["onnx"], x3)
    error = _close(got, expected)
    assert error is None, (
        f"run_onnx({shared['names']['onnx']!r}, a batch of {x3.shape[0]}) should return the "
        f"model's logits (shape {tuple(expected.shape)}); got shape {_shape(got)}, largest "
        f"difference {error:.3g}"
    )


def _write_two_output_model(path: str, weight: torch.Tensor, bias: torch.Tensor,
                            input_name: str) -> None:
    """Run in the kernel: write an ONNX model with one input (batch dynamic) and two outputs,
    first x @ weight.T + bias, then relu(x)."""
    from onnx import TensorProto, helper, numpy_helper, save

    n_out, n_in = weight.shape
    graph = helper.make_graph(
        [helper.make_node("Gemm", [input_name, "weight", "bias"], ["affine"], transB=1),
         helper.make_node("Relu", [input_name], ["rectified"])],
        "grader_two_outputs",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info("affine", TensorProto.FLOAT, ["batch", n_out]),
         helper.make_tensor_value_info("rectified", TensorProto.FLOAT, ["batch", n_in])],
        [numpy_helper.from_array(weight.numpy(), "weight"),
         numpy_helper.from_array(bias.numpy(), "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # a version every supported ONNX Runtime reads
    save(model, path)


def _run_onnx_watched(path: str, x: torch.Tensor) -> tuple[Any, list[list[Any]], str | None]:
    """Run in the kernel: run_onnx(path, x), [intra-op threads, inter-op threads, providers] of
    each ONNX Runtime session run meanwhile (InferenceSession.run, watched), and the error
    run_onnx raised (None when it returned)."""
    import onnxruntime

    cls = onnxruntime.InferenceSession
    owned, original = "run" in cls.__dict__, cls.run
    sessions: list[list[Any]] = []

    def run(self, *args, **kwargs):
        options = self.get_session_options()
        sessions.append([options.intra_op_num_threads, options.inter_op_num_threads,
                         list(self.get_providers())])
        return original(self, *args, **kwargs)

    cls.run = run
    try:
        return run_onnx(path, x), sessions, None  # noqa: F821 - the notebook's function
    except Exception as exc:  # noqa: BLE001 - the student's error, reported by the check
        return None, sessions, f"{type(exc).__name__}: {exc}"[:400]
    finally:
        if owned:
            cls.run = original
        else:
            del cls.run


@pytest.mark.points(2)
def test_run_onnx_first_output_one_thread(student, rng, torch_rng):
    """run_onnx on a model of the grader's with two outputs returns the first one, fed under
    the session's first input name, from ONNX Runtime sessions with one intra-op and one
    inter-op thread on the CPUExecutionProvider (as the task asks). The input comes as float64:
    the task says to feed it as float32 whatever its dtype."""
    n_in, n_out = rng.randint(3, 9), rng.randint(2, 6)
    weight = torch.randn(n_out, n_in, generator=torch_rng)
    bias = torch.randn(n_out, generator=torch_rng)
    tag = f"{rng.randrange(16**6):06x}"
    path = f"grader_two_outputs_{tag}.onnx"
    student.drive(_write_two_output_model, path, weight, bias, f"features_{tag}")
    x = torch.randn(rng.randint(1, 7), n_in, generator=torch_rng, dtype=torch.float64)
    expected = x.float().double() @ weight.double().T + bias.double()
    got, sessions, error = student.with_timeout(60).drive(_run_onnx_watched, path, x)
    assert error is None, (
        f"run_onnx({path!r}, a float64 batch of {x.shape[0]}) raised {error}. Feed x as a "
        f"float32 numpy array, whatever its dtype (the model's input is float32)"
    )
    error = _close(got, expected)
    assert error is None, (
        f"run_onnx({path!r}, a batch of {x.shape[0]}) on a model with two outputs (an affine "
        f"map of shape {tuple(expected.shape)}, then relu(x)) should return the first output; "
        f"got shape {_shape(got)}, largest difference {error:.3g}"
    )
    assert sessions, "run_onnx should run the model in an onnxruntime.InferenceSession"
    wrong = [s for s in sessions if s[:2] != [1, 1] or s[2] != ["CPUExecutionProvider"]]
    assert not wrong, (
        "run_onnx should run ONNX Runtime on one thread: SessionOptions with "
        "intra_op_num_threads = 1 and inter_op_num_threads = 1, providers "
        "['CPUExecutionProvider']; its session ran with [intra, inter, providers] = "
        f"{wrong[0]}"
    )


# ------------------------------------------------------------------------------------------
# 4. What ONNX Runtime runs: runtime_ops at each graph optimization level


@pytest.mark.points(4)
def test_runtime_ops_on_drawn_graphs(student, rng, torch_rng):
    """runtime_ops(path, level) at the four levels, on two chains of layers the grader drew and
    wrote (one with its weights in an external file named by the grader, one whose nodes name
    ONNX's domain "ai.onnx" rather than ""; between them, something "basic" folds and something
    "extended" fuses): the operators of the graph ONNX Runtime writes after its optimizations,
    op_type for ONNX's own domain and domain:op_type for any other, as the grader's own ONNX
    Runtime session on its own copy of the bytes counts them; at the three portable levels the
    notebook's list of folds and fusions gives the same counts."""
    tag = f"{rng.randrange(16**6):06x}"
    while True:  # between them, the two chains have something folded and something fused
        chains = [_draw_chain(rng), _draw_chain(rng)]
        if any(_rule_ops(c, "basic") != _rule_ops(c, "disabled") for c in chains) and any(
                ":" in op for c in chains for op in _rule_ops(c, "extended")):
            break
    aliased = rng.randrange(2)  # this chain's nodes say "ai.onnx", ONNX's domain by name
    for k, (chain, external) in enumerate(zip(chains, rng.sample([True, False], 2),
                                              strict=True)):
        model = _build_chain(chain, rng, torch_rng)
        for node in model.graph.node:
            node.domain = "ai.onnx" if k == aliased else ""
        path = f"grader_runtime_{tag}/chain_{k}.onnx"
        names = [t.name for t in model.graph.initializer]
        data = _externalize(model, dict.fromkeys(names, f"chain_{k}_{tag}.weights")) \
            if external else {}
        files = _model_bytes(model, path, data)
        _send(student, files)
        for level in LEVELS:
            expected = _grader_runtime_ops(files, path, level)
            if level != "all":
                oracles_agree(expected == _rule_ops(chain, level),
                              f"{chain} at {level}: ONNX Runtime {expected}, the table "
                              f"{_rule_ops(chain, level)}")
            got = student.call("runtime_ops", path, level)
            assert got == expected, (
                f"runtime_ops({path!r}, {level!r}) for the chain {' -> '.join(chain)}"
                f"{' (weights in external data)' if external else ''}"
                f"{' (nodes of the domain ai.onnx)' if k == aliased else ''} should be "
                f"{expected}: the nodes of the graph ONNX Runtime runs at that level, each "
                f"named by its op_type in ONNX's own domain (\"\" or \"ai.onnx\"), as "
                f"domain:op_type in any other; got {got}"
            )


@pytest.mark.slow_check
@pytest.mark.points(2)
def test_runtime_ops_of_your_models(student, shared):
    """runtime_ops on the files to_onnx and quantize_onnx wrote, at the four levels, equals the
    count of the grader's judge (ONNX Runtime on those files, in the sandboxed process): with
    external data (the fp32 model), and in the int8 model, where "extended" runs integer
    QLinearConv kernels."""
    _need(shared, "onnx", "to_onnx")
    _need(shared, "int8", "quantize_onnx")
    for what in ("onnx", "int8"):
        file = shared["names"][what]
        runtime = _judged(student, shared, what, file)["runtime"]
        assert runtime["ok"], f"ONNX Runtime fails to optimize {file}: {runtime['error']}"
        for level in LEVELS:
            expected = runtime["value"][level]
            got = student.call("runtime_ops", file, level)
            assert got == expected, (
                f"runtime_ops({file!r}, {level!r}) should be {expected} (the nodes of the "
                f"graph ONNX Runtime runs for that file at that level), got {got}"
            )


# ------------------------------------------------------------------------------------------
# 5. int8: really int8, small, accurate


INT8_TYPES = (2, 3)  # onnx.TensorProto.UINT8, INT8
FLOAT_TYPES = (1, 10, 11, 16)  # FLOAT, FLOAT16, DOUBLE, BFLOAT16


@pytest.mark.slow_check
@pytest.mark.points(3)
def test_int8_model_stores_int8_weights_and_is_small(student, shared):
    """The model quantize_onnx wrote stores the conv and linear weights as 8-bit integers (no
    float copy left) in the QDQ format, one scale per tensor (not per channel), and its files
    (external data included) take at most half of 4 bytes per parameter; quantize_onnx returns
    those files."""
    _need(shared, "onnx", "to_onnx")
    _need(shared, "int8", "quantize_onnx")
    file = shared["names"]["int8"]
    part = _judged(student, shared, "int8", file)
    inspected = part["inspect"]
    assert inspected["ok"], f"{file} is not a readable ONNX model: {inspected['error']}"
    tensors = inspected["value"]["tensors"]
    int8 = sum(n for dtype, n in tensors if dtype in INT8_TYPES)
    floats = sum(n for dtype, n in tensors if dtype in FLOAT_TYPES)
    weights = shared["weights"]
    assert int8 >= 0.95 * weights and floats <= 0.1 * weights, (
        f"{file} should store the {weights:,} conv and linear weights as int8; it holds "
        f"{int8:,} 8-bit and {floats:,} floating-point values. Quantize the model, do not "
        f"copy the float one."
    )
    files_now = shared["files"][-1]
    needed = [file] + [os.path.normpath(os.path.join(os.path.dirname(file), loc))
                       for loc in inspected["value"]["locations"]]
    missing = [p for p in needed if p not in files_now]
    assert not missing, f"{file} references files that do not exist: {missing}"
    returned = shared["int8"]["value"]
    assert isinstance(returned, list | tuple) and \
        sorted({os.path.normpath(str(p)) for p in returned}) == sorted(needed), (
            f"quantize_onnx should return the files the int8 model consists of, {needed}, "
            f"got {returned!r}")
    dequantized = inspected["value"]["dequantized"]
    weights_dq = [dims for dims, _ in dequantized if len(dims) >= 2]
    per_channel = [(dims, scale) for dims, scale in dequantized
                   if scale is None or _numel(scale) != 1]
    assert weights_dq and not per_channel, (
        f"{file} should hold the conv and linear weights as int8 initializers, each read by a "
        f"DequantizeLinear (QDQ format) with one scale for the whole tensor (per tensor); "
        f"found {len(weights_dq)} such weights, and scales of more than one value (per "
        f"channel) for {per_channel or 'none'}"
    )
    size, limit = sum(files_now[p] for p in needed), INT8_SIZE_FRACTION * 4 * shared["params"]
    assert size <= limit, (
        f"the int8 model takes {size:,} bytes; it should take at most "
        f"{INT8_SIZE_FRACTION:g} x 4 bytes x {shared['params']:,} parameters = {limit:,.0f}"
    )


def _reference_int8_accuracy(shared: dict[str, Any]) -> float:
    """Test accuracy of the grader's own int8 model of this run's CNN: exported (eval mode,
    dynamic batch) to ONNX, then static QDQ per-tensor int8 quantization with ONNX Runtime,
    calibrated on this run's images, run in ONNX Runtime on one thread. Files the grader wrote
    itself, so they are opened here, not in the judge."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self, name: str, x: torch.Tensor) -> None:
            data = x.numpy().astype(np.float32)
            self.feeds = iter([{name: data[i:i + 64]} for i in range(0, len(data), 64)])

        def get_next(self):
            return next(self.feeds, None)

    model = nncourse.make_cnn(shared["channels"])
    model.load_state_dict(shared["state"])
    example = shared["example"]
    if example.shape[0] < 2:  # the tracer specializes a batch of 1: trace with a batch of 2
        example = example[:1].expand(2, *example.shape[1:]).contiguous()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), one_thread():
        warnings.simplefilter("ignore")  # the exporters' and quantizer's own notices
        fp32, prepared, int8 = (os.path.join(tmp, n) for n in ("m.onnx", "p.onnx", "q.onnx"))
        program = torch.export.export(model.eval(), (example,),
                                      dynamic_shapes=({0: Dim("batch")},))
        torch.onnx.export(program, f=fp32, dynamo=True, external_data=True, verbose=False)
        quant_pre_process(fp32, prepared)
        name = onnx.load(fp32, load_external_data=False).graph.input[0].name
        quantize_static(prepared, int8, Reader(name, shared["calib"]),
                        quant_format=QuantFormat.QDQ, per_channel=False,
                        weight_type=QuantType.QInt8)
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = ort.InferenceSession(int8, options, providers=["CPUExecutionProvider"])
        _, _, x_test, _ = nncourse.load_digits_split()
        logits = torch.from_numpy(session.run(None, {name: x_test.numpy()})[0])
    return (logits.argmax(dim=1) == shared["labels"]).double().mean().item()


@pytest.mark.slow_check
@pytest.mark.points(3)
def test_int8_model_accuracy(student, shared):
    """The int8 model, run by the grader's judge in ONNX Runtime on the test images,
    classifies within INT8_ACCURACY_MARGIN of the fp32 model (labels stay in the grader), or no
    worse than the grader's own int8 model of the draw."""
    _need(shared, "onnx", "to_onnx")
    _need(shared, "int8", "quantize_onnx")
    file = shared["names"]["int8"]
    run = _judged(student, shared, "int8", file)["test"]
    assert run["ok"], f"{file} fails on the {len(shared['labels'])} test images: {run['error']}"
    logits = run["value"]
    n = len(shared["labels"])
    assert isinstance(logits, torch.Tensor) and logits.shape == (n, 10), (
        f"{file} should give ({n}, 10) logits on the test images, got {_shape(logits)}"
    )
    accuracy = (logits.argmax(dim=1) == shared["labels"]).double().mean().item()
    demand = demanded(accuracy, shared["fp32_accuracy"] - INT8_ACCURACY_MARGIN,
                      lambda: _reference_int8_accuracy(shared), REFERENCE_MARGIN)
    assert demand.met_by(accuracy), (
        f"the int8 model's test accuracy is {accuracy:.4f}; it should be at least the fp32 "
        f"model's {shared['fp32_accuracy']:.4f} - {INT8_ACCURACY_MARGIN}: "
        f"{demand.minimum:.4f}{demand.note()}. Calibrate on the inputs given."
    )
