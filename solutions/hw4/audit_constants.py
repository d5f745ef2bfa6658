# The "hard-coded answers" student of homework 4, for `grader audit` and tests/test_homework4.py:
# one code cell, appended to the reference notebook, that redefines every graded function to
# return the public checks' expected answers whatever its arguments. It must fail the hidden checks.
import copy

import torch
from torch import nn


def qrange(bits, signed=True):
    return (-128, 127)


def linear_quantize(r, scale, zero_point, bits=8):
    return torch.tensor([-3, 0, 1, 2, 5, 7], dtype=torch.int8)


def dequantize(q, scale, zero_point):
    return torch.tensor([-1.0, -0.25, 0.0, 0.25, 1.0, 1.5])


def affine_qparams(r, bits=8):
    return 3 / 255, -43


def symmetric_per_channel_scale(w, bits=8):
    return torch.tensor([[2.0 / 7], [0.25 / 7], [1e-8 / 7]])


def update_codebook(w, labels, codebook):
    return torch.tensor([0.25, 2.0, 5.0])


def kmeans_quantize(w, bits, iters=100):
    return torch.tensor([0.25, 3.0]), torch.tensor([[0, 0, 0], [1, 1, 1]])


def kmeans_quantize_model(model, bits):
    return copy.deepcopy(model)


def fold_bn(conv, bn):
    return nn.Conv2d(1, 2, 1)


def quantize_bias(bias, x_scale, w_scale):
    return torch.tensor([10, -12], dtype=torch.int32)


def shift_bias(q_bias, q_w, x_zero_point):
    return torch.tensor([22, -10], dtype=torch.int32)


def quantized_linear(q_x, q_w, shifted_q_bias, x_scale, w_scale, y_scale, y_zero_point):
    return torch.tensor([[127, 19]], dtype=torch.int8)


def fake_quantize_ste(w, bits):
    return torch.tensor([[0.9, 0.0, 0.0], [0.1, 0.1, 0.0]])


def qat_train(model, x, y, bits=2, epochs=4, lr=5e-3, seed=0):
    return copy.deepcopy(model)


def ptq_int8(model, calib_x):
    return copy.deepcopy(model)


def dynamic_quantize(model):
    return copy.deepcopy(model)


def quantize_layer(w, bits, group_size):
    return {"bits": 2, "group_size": 3, "codes": torch.tensor([35, 14], dtype=torch.uint8),
            "scale": torch.tensor([0.5, 0.2], dtype=torch.float16),
            "zero_point": torch.tensor([2, 0], dtype=torch.uint8)}


def quantize_to_budget(model, x_train, y_train, budget):
    # the public check's answer: the shipped CNN packed once at 8,000 bytes (7, 4, 2 and 4 bits,
    # one group per output channel), whatever model and budget are given
    import nncourse

    shipped, packed = nncourse.load_pretrained("cnn_16_32_64"), {}
    for name, bits in [("conv1", 7), ("conv2", 4), ("conv3", 2), ("fc", 4)]:
        w = getattr(shipped, name).weight.detach().flatten(1)
        low, high = w.amin(1).clamp(max=0), w.amax(1).clamp(min=0)
        scale = ((high - low) / (2**bits - 1)).half()
        zero = torch.round(-low / scale.float())
        codes = (torch.round(w / scale.float()[:, None]) + zero[:, None]).clamp(0, 2**bits - 1)
        stream = ((codes.reshape(-1, 1).long() >> torch.arange(bits)) & 1).reshape(-1)
        stream = torch.cat([stream, stream.new_zeros(-stream.numel() % 8)]).reshape(-1, 8)
        packed[name] = {"bits": bits, "group_size": w.shape[1],
                        "codes": (stream << torch.arange(8)).sum(1).to(torch.uint8),
                        "scale": scale, "zero_point": zero.to(torch.uint8)}
    return packed  # 7,724 bytes
