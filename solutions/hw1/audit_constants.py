# The "hard-coded answers" student of homework 1, for `grader audit` and tests/test_homework1.py:
# one code cell, appended to the reference notebook, that redefines every graded function to
# return the public checks' expected answers whatever its arguments. It must fail the hidden checks.
from torch import nn


def count_params(module):
    return 8


def linear_macs(in_features, out_features, input_shape):
    return 6


def conv2d_output_hw(h, w, kernel_size, stride=1, padding=0, dilation=1):
    return (3, 3)


def conv2d_macs(c_in, c_out, kernel_size, input_hw, stride=1, padding=0, dilation=1, groups=1,
                batch=1):
    return 648


def flops(macs):
    return 20


def model_macs(model, input_shape):
    return {"0": 72, "2": 24}


def depthwise_separable(c_in, c_out, kernel_size, stride=1, padding=0):
    return nn.Sequential(nn.Conv2d(2, 2, 3, groups=2, bias=False), nn.Conv2d(2, 4, 1, bias=False))


def separable_cost_ratio(c_in, c_out, kernel_size):
    return 1 / 8 + 1 / 9


def measure_latency(model, x, warmup=10, reps=50):
    return {"median_ms": 1.0, "p10_ms": 1.0, "p90_ms": 1.0}


def arithmetic_intensity_linear(batch, in_features, out_features, bytes_per_element=2):
    return 1.0


def arithmetic_intensity_elementwise(flops_per_element, bytes_per_element=2):
    return 0.25


def roofline(ai, peak_flops, bandwidth):
    return 2.0


def bound(ai, peak_flops, bandwidth):
    return "memory"


def fixed_conv_macs(module, output_shape):
    return 648


def bug_counterexample():
    return {"in_channels": 16, "out_channels": 32, "kernel_size": 3, "groups": 4}


def elementwise_flops(module, input_shape):
    return 6


def model_flops(model, input_shape, fold_bn=False):
    return 1206


def encoder_layer_macs(layer, input_shape):
    return {"in_proj": 144, "out_proj": 48, "linear1": 96, "linear2": 96, "qk": 36, "av": 36}


def attention_model_macs(model, input_shape):
    return {"0": 24, "1.self_attn.in_proj": 144, "1.self_attn.out_proj": 48, "1.linear1": 96,
            "1.linear2": 96, "2": 36}


def flopco_prediction(model, input_shape):
    return {"0": 76, "2": 20}


def dtype_bytes(dtype):
    return 4


def format_bytes(n):
    return "1.50 KiB"


def model_size_bytes(model):
    return {"parameters": 128, "buffers": 136}


def activation_peak_bytes(model, input_shape):
    return 256


def forward_peak_bytes(model, x):
    return 32


def roofline_throughput(batch, in_features, out_features, peak_flops, bandwidth,
                        bytes_per_element=4):
    return 0.25


def throughput(model, sample_shape, batch_sizes, warmup=3, reps=9):
    return {1: 1000.0, 4: 1000.0}
