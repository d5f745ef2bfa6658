"""The course kit's data: the same tensors, in the same order, as scikit-learn loads and splits
them, read from the file the kit ships, without importing scikit-learn."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import torch
from conftest import REPO
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import nncourse
from nncourse.data import SPLIT_SEED, TEST_SIZE


def test_the_split_is_scikit_learns_tensor_for_tensor():
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    train, test = train_test_split(np.arange(len(y)), test_size=TEST_SIZE,
                                   random_state=SPLIT_SEED, stratify=digits.target)
    expected = (x[train], y[train], x[test], y[test])
    for got, want in zip(nncourse.load_digits_split(), expected, strict=True):
        assert got.dtype == want.dtype and torch.equal(got, want)


def test_loading_the_data_imports_no_scikit_learn():
    code = ("import sys, nncourse\n"
            "x_train, y_train, x_test, y_test = nncourse.load_digits_split()\n"
            "assert (len(x_train), len(x_test)) == (1347, 450)\n"
            "print('sklearn' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO / "assignments")})
    assert done.stdout.strip() == "False", done.stderr
