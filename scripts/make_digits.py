"""Write the course's digits: scikit-learn's 8x8 digits with the course's fixed split, in two
files, so that the course kit loads them without scikit-learn and never holds the images the
grader keeps back. Run once (the files are committed):

    .venv/bin/python scripts/make_digits.py

- assignments/nncourse/digits.pt (shipped in the kit): the 1,347 train images and 300 of the
  450 test images;
- solutions/hwN/checks/heldout_digits.pt for each homework with a challenge (never shipped):
  the other 150 test images, stratified (14 to 16 of each digit), on which the grader measures
  the models the challenges return.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from nncourse.data import DIGITS_FILE, HELDOUT_SIZE, SPLIT_SEED, TEST_SIZE

REPO = Path(__file__).resolve().parents[1]
CHALLENGES = ("hw2", "hw3", "hw4")
HELDOUT_NAME = "heldout_digits.pt"


def split() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The indices into load_digits() of the train images, the kit's test images and the held-out
    images, each in scikit-learn's split order (tests/test_nncourse.py checks them)."""
    labels = load_digits().target
    train, test = train_test_split(np.arange(len(labels)), test_size=TEST_SIZE,
                                   random_state=SPLIT_SEED, stratify=labels)
    _, heldout = train_test_split(test, test_size=HELDOUT_SIZE, random_state=SPLIT_SEED,
                                  stratify=labels[test])
    kept = np.isin(test, heldout)
    return train, test[~kept], test[kept]


def main() -> None:
    digits = load_digits()
    pixels = torch.tensor(digits.data.astype(np.uint8))
    labels = torch.tensor(digits.target.astype(np.uint8))
    train, test, heldout = (torch.tensor(i) for i in split())
    torch.save({"train_pixels": pixels[train], "train_labels": labels[train],
                "test_pixels": pixels[test], "test_labels": labels[test]}, DIGITS_FILE)
    print(f"wrote {Path(DIGITS_FILE)}: {len(train)} train, {len(test)} test images")
    for assignment in CHALLENGES:
        path = REPO / "solutions" / assignment / "checks" / HELDOUT_NAME
        torch.save({"pixels": pixels[heldout], "labels": labels[heldout]}, path)
        print(f"wrote {path}: {len(heldout)} held-out images")


if __name__ == "__main__":
    main()
