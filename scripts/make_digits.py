"""Write assignments/nncourse/digits.pt: scikit-learn's digits and the course's fixed split, so
that the course kit loads them without scikit-learn. Run once (the file is committed):

    .venv/bin/python scripts/make_digits.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from nncourse.data import DIGITS_FILE, SPLIT_SEED, TEST_SIZE


def main() -> None:
    digits = load_digits()
    train, test = train_test_split(np.arange(len(digits.target)), test_size=TEST_SIZE,
                                   random_state=SPLIT_SEED, stratify=digits.target)
    torch.save({"pixels": torch.tensor(digits.data.astype(np.uint8)),
                "labels": torch.tensor(digits.target.astype(np.uint8)),
                "train": torch.tensor(train, dtype=torch.int16),
                "test": torch.tensor(test, dtype=torch.int16)}, DIGITS_FILE)
    print(f"wrote {Path(DIGITS_FILE)}")


if __name__ == "__main__":
    main()
