"""Training and evaluation helpers, and the shipped pretrained weights."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from nncourse.models import make_cnn, make_mlp

WEIGHTS_DIR = Path(__file__).with_name("weights")

# name -> constructor of the architecture whose state_dict is shipped as weights/<name>.pt
PRETRAINED: dict[str, Callable[[], nn.Module]] = {
    "cnn_16_32_64": lambda: make_cnn((16, 32, 64)),
    "cnn_32_64_128": lambda: make_cnn((32, 64, 128)),
    "mlp_256_128": lambda: make_mlp((256, 128)),
}


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int = 8,
    lr: float = 1e-2,
    batch_size: int = 64,
    seed: int = 0,
    callback: Callable[[], None] | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> nn.Module:
    """Train ``model`` in place with Adam and a one-cycle schedule; return it in eval mode.

    Shuffling uses its own seeded generator, so a run is reproducible at a fixed thread count.
    ``callback`` runs after every optimizer step (a pruner re-applies its masks there).
    """
    loss_fn = loss_fn or nn.functional.cross_entropy
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = (len(x) + batch_size - 1) // batch_size
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, epochs=epochs, steps_per_epoch=steps_per_epoch
    )
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            sched.step()
            if callback is not None:
                callback()
    return model.eval()


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Accuracy (a fraction in [0, 1]) of ``model`` on ``(x, y)``.

    Runs in eval mode without gradients and restores the model's previous train/eval mode,
    so BatchNorm statistics are never touched.
    """
    was_training = model.training
    model.eval()
    try:
        correct = 0
        for start in range(0, len(x), batch_size):
            logits = model(x[start : start + batch_size])
            correct += int((logits.argmax(dim=1) == y[start : start + batch_size]).sum())
        return correct / len(x)
    finally:
        model.train(was_training)


def load_pretrained(name: str) -> nn.Module:
    """A freshly built model with the shipped weights ``name`` loaded, in eval mode.

    Names: ``cnn_16_32_64``, ``cnn_32_64_128``, ``mlp_256_128`` (see ``PRETRAINED``).
    """
    if name not in PRETRAINED:
        raise KeyError(f"no pretrained weights named {name!r}; known: {sorted(PRETRAINED)}")
    model = PRETRAINED[name]()
    state = torch.load(WEIGHTS_DIR / f"{name}.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()
