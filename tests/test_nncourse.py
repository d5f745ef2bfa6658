"""The course kit's data: the same tensors, in the same order, as scikit-learn loads and splits
them, read from the file the kit ships, without importing scikit-learn."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import nncourse
from grader.checks import heldout_split
from nncourse.data import HELDOUT_SIZE, SPLIT_SEED, TEST_SIZE


def _scikit_learn() -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    train, test = train_test_split(np.arange(len(y)), test_size=TEST_SIZE,
                                   random_state=SPLIT_SEED, stratify=digits.target)
    return x, y, train, test


def test_the_split_is_scikit_learns_tensor_for_tensor_less_the_held_out_images():
    x, y, train, test = _scikit_learn()
    heldout = heldout_split(REPO / "solutions" / "hw2" / "checks" / "heldout_digits.pt")
    _, _, kit_x, kit_y = nncourse.load_digits_split()
    # the kit's test images and the held-out ones are scikit-learn's test split, in its order
    # (each image found by its pixels; digits repeat, so the labels are compared by position)
    kit = [bool((x[i] == kit_x).flatten(1).all(1).any()) for i in test]
    assert sum(kit) == len(test) - HELDOUT_SIZE == len(kit_x) == 300
    assert torch.equal(kit_x, x[test[kit]]) and torch.equal(kit_y, y[test[kit]])
    assert torch.equal(heldout[0], x[test[~np.array(kit)]])
    assert torch.equal(heldout[1], y[test[~np.array(kit)]])
    x_train, y_train, _, _ = nncourse.load_digits_split()
    assert x_train.dtype == x[train].dtype and torch.equal(x_train, x[train])
    assert torch.equal(y_train, y[train])


def test_the_held_out_images_are_stratified_and_the_same_for_every_challenge():
    files = sorted(REPO.glob("solutions/*/checks/heldout_digits.pt"))
    assert [f.parts[-3] for f in files] == ["hw2", "hw3", "hw4"]
    first = heldout_split(files[0])
    for other in files[1:]:
        assert all(torch.equal(a, b) for a, b in zip(first, heldout_split(other), strict=True))
    counts = torch.bincount(first[1]).tolist()
    assert len(counts) == 10 and sum(counts) == 150 and min(counts) >= 14 and max(counts) <= 16


def test_no_held_out_image_is_in_the_kit():
    x_train, _, x_test, _ = nncourse.load_digits_split()
    kit = torch.cat([x_train, x_test]).flatten(1)
    heldout = heldout_split(REPO / "solutions" / "hw2" / "checks" / "heldout_digits.pt")[0]
    x, _, _, _ = _scikit_learn()
    # an image the kit holds may have a twin among the held-out ones (same pixels): only those
    # that scikit-learn's data holds twice can be in both
    counts = {tuple(row.tolist()): 0 for row in x.flatten(1)}
    for row in x.flatten(1):
        counts[tuple(row.tolist())] += 1
    for row in heldout.flatten(1):
        if counts[tuple(row.tolist())] == 1:
            assert not (kit == row).all(1).any()


def test_a_missing_held_out_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        heldout_split(tmp_path / "nothing.pt")


def test_loading_the_data_imports_no_scikit_learn():
    code = ("import sys, nncourse\n"
            "x_train, y_train, x_test, y_test = nncourse.load_digits_split()\n"
            "assert (len(x_train), len(x_test)) == (1347, 300)\n"
            "print('sklearn' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO / "assignments")})
    assert done.stdout.strip() == "False", done.stderr
