"""The small models every homework works on.

Modules are named (``conv1``, ``bn1``, ...) so that notebooks and checks can address layers by
name, and so that surgery (pruning, decomposition, folding) can replace them in place.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


def make_cnn(
    channels: tuple[int, int, int] = (32, 64, 128), num_classes: int = 10
) -> nn.Sequential:
    """The course CNN for 1x8x8 digits.

    conv1-bn1-relu1, conv2-bn2-relu2, pool (2x2, 8x8 -> 4x4), conv3-bn3-relu3, global average
    pool, flatten, fc. Every conv is 3x3 with padding 1 and no bias (BatchNorm follows).
    """
    c1, c2, c3 = channels
    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(1, c1, 3, padding=1, bias=False)),
                ("bn1", nn.BatchNorm2d(c1)),
                ("relu1", nn.ReLU()),
                ("conv2", nn.Conv2d(c1, c2, 3, padding=1, bias=False)),
                ("bn2", nn.BatchNorm2d(c2)),
                ("relu2", nn.ReLU()),
                ("pool", nn.MaxPool2d(2)),
                ("conv3", nn.Conv2d(c2, c3, 3, padding=1, bias=False)),
                ("bn3", nn.BatchNorm2d(c3)),
                ("relu3", nn.ReLU()),
                ("gap", nn.AdaptiveAvgPool2d(1)),
                ("flatten", nn.Flatten()),
                ("fc", nn.Linear(c3, num_classes)),
            ]
        )
    )


def make_mlp(hidden: tuple[int, ...] = (256, 128), num_classes: int = 10) -> nn.Sequential:
    """An MLP on flattened 8x8 digits: 64 -> hidden... -> num_classes, ReLU between."""
    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    width = 64
    for i, h in enumerate(hidden, start=1):
        layers += [(f"fc{i}", nn.Linear(width, h)), (f"relu{i}", nn.ReLU())]
        width = h
    layers.append((f"fc{len(hidden) + 1}", nn.Linear(width, num_classes)))
    return nn.Sequential(OrderedDict(layers))


class Residual(nn.Module):
    """A skip connection: ``x + body(x)``, for a ``body`` that keeps the shape of its input.

    The addition is a module of its own so that a counter with forward hooks can see it.
    """

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(x)
        return x + out


def make_resnet(channels: int = 32, blocks: int = 2, num_classes: int = 10) -> nn.Sequential:
    """A small residual CNN for 1x8x8 digits.

    A stem (conv-bn-relu, 1 -> channels), then ``blocks`` residual blocks ``block<i>``, each
    ``Residual(conv1-bn1-relu1-conv2-bn2)`` followed by ``relu<i>``; global average pool,
    flatten, fc. Every conv is 3x3 with padding 1 and no bias, so the spatial size is kept.
    """
    layers: list[tuple[str, nn.Module]] = [
        ("stem", nn.Sequential(OrderedDict([
            ("conv", nn.Conv2d(1, channels, 3, padding=1, bias=False)),
            ("bn", nn.BatchNorm2d(channels)),
            ("relu", nn.ReLU()),
        ]))),
    ]
    for i in range(1, blocks + 1):
        body = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(channels, channels, 3, padding=1, bias=False)),
            ("bn1", nn.BatchNorm2d(channels)),
            ("relu1", nn.ReLU()),
            ("conv2", nn.Conv2d(channels, channels, 3, padding=1, bias=False)),
            ("bn2", nn.BatchNorm2d(channels)),
        ]))
        layers += [(f"block{i}", Residual(body)), (f"relu{i}", nn.ReLU())]
    layers += [("gap", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()),
               ("fc", nn.Linear(channels, num_classes))]
    return nn.Sequential(OrderedDict(layers))
