"""What homework 1 says about its tools holds for the pinned versions: FlopCo 0.1.4's
conventions and side effects, PyTorch 2.13's encoder-layer fast path, the kit's residual CNN.

The notebook teaches these facts and the hidden checks use FlopCo as an oracle, so an upgrade
that changes one of them must fail here first.
"""

from __future__ import annotations

import math

import pytest
import torch
from flopco import FlopCo
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import nncourse


def _flopco_flops(model: nn.Module, shape: tuple[int, ...]) -> dict[str, int]:
    return {name: sum(values) for name, values in FlopCo(model, img_size=shape).flops.items()}


def _counted_flops(module: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops()


def test_flopco_counts_one_sample_of_the_course_cnn():
    # at batch 4 it reports the MACs of batch 1 (2,379,008 for CNN(32, 64, 128))
    stats = FlopCo(nncourse.make_cnn().eval(), img_size=(4, 1, 8, 8))
    assert stats.total_macs == 2_379_008
    assert {name: sum(v) for name, v in stats.macs.items()}["fc"] == 128 * 10


@pytest.mark.parametrize("groups, channels_read", [(1, 8), (2, 1), (4, 1), (8, 1)])
def test_flopco_reads_one_input_channel_whenever_groups_is_not_1(groups, channels_read):
    conv = nn.Sequential(nn.Conv2d(8, 16, 3, groups=groups, bias=False)).eval()
    assert _flopco_flops(conv, (3, 8, 6, 6)) == {"0": 2 * 4 * 4 * 16 * channels_read * 9}


def test_flopco_counts_one_row_of_a_linear_and_adds_in_features_for_its_bias():
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3, bias=False)).eval()
    assert _flopco_flops(model, (2, 4, 5)) == {"0": 2 * 5 * 7 + 5, "2": 2 * 7 * 3}


def test_flopco_adds_one_bias_addition_per_conv_output_of_a_sample():
    conv = nn.Sequential(nn.Conv2d(2, 3, 3)).eval()
    assert _flopco_flops(conv, (5, 2, 6, 6)) == {"0": 2 * 4 * 4 * 3 * 2 * 9 + 3 * 4 * 4}


def test_flopco_runs_in_the_models_mode_and_clears_every_hook():
    cnn = nncourse.make_cnn((4, 8, 8)).train()
    cnn.fc.register_forward_hook(lambda *args: None)
    before = cnn.bn1.running_mean.clone()
    FlopCo(cnn, img_size=(2, 1, 8, 8))
    assert not torch.equal(before, cnn.bn1.running_mean)  # a forward in training mode
    assert cnn.training
    assert not any(m._forward_hooks for m in cnn.modules())


def test_flopco_does_not_see_attention_projections():
    model = nn.Sequential(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True))
    assert set(_flopco_flops(model.eval(), (2, 3, 8))) == {"0.linear1", "0.linear2"}


def test_fast_paths_hide_attention_from_flopcountermode_and_a_hook_leaves_only_the_layers():
    encoder = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True).eval()
    x, tokens = torch.randn(2, 3, 8), 2 * 3
    feed_forward, attention = 2 * tokens * 2 * 8 * 16, 2 * tokens * (8 * 24 + 8 * 8)
    assert _counted_flops(encoder, x) == 0  # the whole layer is one fused operator
    seen = []
    handle = encoder.linear1.register_forward_hook(lambda *args: seen.append(1))
    try:
        # a hook makes the layer take its slow path; attention keeps its own fused path
        assert _counted_flops(encoder, x) == feed_forward and seen
    finally:
        handle.remove()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        assert _counted_flops(encoder, x) == feed_forward + attention
    finally:
        torch.backends.mha.set_fastpath_enabled(True)


def test_make_resnet_blocks_add_their_input():
    model = nncourse.make_resnet(channels=4, blocks=3).eval()
    blocks = [m for m in model.modules() if isinstance(m, nncourse.Residual)]
    assert len(blocks) == 3
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        assert torch.equal(blocks[0](x), x + blocks[0].body(x))
        assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 2 * 3 and all(c.bias is None for c in convs)
    assert _counted_flops(model, torch.zeros(1, 1, 8, 8)) == 2 * (
        4 * 64 * 9 + 6 * 4 * 64 * 4 * 9 + 4 * 10
    )
    assert math.prod(model(torch.zeros(3, 1, 8, 8)).shape) == 30
