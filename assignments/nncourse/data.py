"""The course data set: the 8x8 digits (1,797 images of handwritten digits, from the UCI
"Optical Recognition of Handwritten Digits" data, as scikit-learn ships them), stored with the
course kit in ``digits.pt``, with the fixed train/test split: no download, and no import of
scikit-learn (about a second at every notebook start).

The kit holds 1,647 of them: the 1,347 train images and 300 of the 450 test images. The grader
keeps the other 150 test images (14 to 16 of each digit) back: it measures the models that the
homeworks' challenges return on images no student's code has seen."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

TEST_SIZE = 0.25
SPLIT_SEED = 0
HELDOUT_SIZE = 150
# The pixels (0..16) and labels as scikit-learn's load_digits() gives them: the train images as
# its train_test_split(test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=labels) makes
# them, and the test images less the HELDOUT_SIZE that a second stratified split of the test
# images (same seed) holds back, each in split order (tests/test_nncourse.py checks them against
# scikit-learn; scripts/make_digits.py writes the file).
DIGITS_FILE = Path(__file__).with_name("digits.pt")


@functools.cache
def _split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    data = torch.load(DIGITS_FILE, weights_only=True)
    return (*as_tensors(data["train_pixels"], data["train_labels"]),
            *as_tensors(data["test_pixels"], data["test_labels"]))


def as_tensors(pixels: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stored digits (uint8 pixels 0..16, one row of 64 per image; uint8 labels) as the course
    uses them: float32 images of shape (N, 1, 8, 8) in [0, 1] and int64 labels."""
    return (pixels.to(torch.float32).reshape(-1, 1, 8, 8) / 16.0, labels.to(torch.int64))


def load_digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(X_train, y_train, X_test, y_test)``: 1,347 train and 300 test images.

    Images are float32 tensors of shape (N, 1, 8, 8) scaled to [0, 1]; labels are int64 in
    0..9. The split is fixed (stratified, seed 0), so every notebook and the grader see the
    same held-out images. Each call returns fresh copies, so callers may modify them.
    """
    x_train, y_train, x_test, y_test = _split()
    return x_train.clone(), y_train.clone(), x_test.clone(), y_test.clone()
