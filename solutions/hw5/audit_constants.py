# The "hard-coded answers" student of homework 5, for `grader audit` and tests/test_homework5.py:
# one code cell, appended to the reference notebook, that redefines every graded function to
# return the public checks' expected answers whatever its arguments. It must fail the hidden checks.
import torch


def export_program(model, example):
    return None


def count_ops(ep):
    return {"aten.conv2d.default": 1, "aten.batch_norm.default": 1, "aten.relu.default": 1,
            "aten.flatten.using_ints": 1, "aten.linear.default": 1}


def save_pt2(model, example, path):
    return "public_tiny.pt2"


def onnx_files(path):
    return ["public_conv.onnx", "public_weights.bin"]


def to_onnx(model, example, path):
    return ["public_files.onnx", "public_files.onnx.data"]


def artifact_size(paths):
    return 4096


def run_onnx(path, x):
    return torch.tensor([
        [-0.92125, -0.82875, -0.6575, -0.4075, -0.07875, 0.32875, 0.815, 0.82875],
        [-1.16125, -0.98875, -0.7375, -0.4075, 0.00125, 0.48875, 1.055, 0.58875],
        [-1.40125, -1.14875, -0.8175, -0.4075, 0.08125, 0.64875, 1.295, 0.34875],
    ])


def runtime_ops(path, level):
    return {"disabled": {"Conv": 1, "Mul": 1, "Relu": 1}, "basic": {"Conv": 1, "Relu": 1},
            "extended": {"com.microsoft:FusedConv": 1}}.get(level, {})


def quantize_onnx(fp32_path, int8_path, calib_x):
    return ["public_int8.onnx"]
