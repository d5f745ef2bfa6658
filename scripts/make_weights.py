"""Train the course's pretrained models and write assignments/nncourse/weights/*.pt.

Deterministic: one thread, seed 0, the kit's fixed split and training loop. Run it again after
changing a model or the training recipe; the printed accuracies go into the kit's docs.

    python scripts/make_weights.py
"""

from __future__ import annotations

import torch

import nncourse
from nncourse.training import PRETRAINED, WEIGHTS_DIR

EPOCHS = {"cnn_16_32_64": 8, "cnn_32_64_128": 8, "mlp_256_128": 15}


def main() -> None:
    torch.set_num_threads(1)
    x_train, y_train, x_test, y_test = nncourse.load_digits_split()
    WEIGHTS_DIR.mkdir(exist_ok=True)
    for name, build in PRETRAINED.items():
        torch.manual_seed(0)
        model = nncourse.train(build(), x_train, y_train, epochs=EPOCHS[name], seed=0)
        path = WEIGHTS_DIR / f"{name}.pt"
        torch.save(model.state_dict(), path)
        acc = nncourse.evaluate(model, x_test, y_test)
        print(f"{name}: test accuracy {acc:.4f}, {path.stat().st_size:,} bytes -> {path}")


if __name__ == "__main__":
    main()
