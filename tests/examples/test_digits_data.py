"""The digits example's shipped data (squeezer/examples/data/digits.npz): scikit-learn's arrays, bit for bit."""

from __future__ import annotations

import hashlib
from importlib import resources

import numpy as np
import pytest
import torch

from squeezer.examples import digits

# SHA-256 of the raw bytes of sklearn.datasets.load_digits()'s images (float64) and target (int64), and of
# train_test_split(range(1797), test_size=450, random_state=0, stratify=target)'s index lists as int64
SHA256 = {
    "images": "20def7f70a702f0af9732fbba4375e147a7d54fe70d8c45569b8e7c1c7010c10",
    "target": "a3c91c262eddcf7ba8f0e37507c30284493c9b20412ffe4af30d536401f7ba21",
    "train": "0b676d227bedc8516effacb4a66adb41c91fdc5835223a35d9972f55831de856",
    "val": "c5f4eb8f9b9900ba192d0d6144e3b6ede4f6c7a6b5df902cca12b6e99504b0a7",
}


def sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()).hexdigest()


def test_the_arrays_are_scikit_learns() -> None:
    images, target = digits.load_digits()
    assert images.shape == (1797, 8, 8) and images.dtype == np.float64
    assert target.shape == (1797,) and target.dtype == np.int64
    train, val = digits.split_indices()
    assert {"images": sha256(images), "target": sha256(target), "train": sha256(train), "val": sha256(val)} == SHA256


def test_the_data_file_and_its_notice_ship_with_the_package() -> None:
    data = resources.files("squeezer.examples").joinpath("data")
    assert data.joinpath("digits.npz").is_file()
    notice = data.joinpath("NOTICE").read_text(encoding="utf-8")
    assert "CC BY 4.0" in notice and "BSD 3-Clause" in notice


def test_the_split_is_fixed_stratified_and_disjoint() -> None:
    _, target = digits.load_digits()
    for seed in (0, 1):
        train, val = digits.split_indices(seed)
        assert len(train) == 1347 and len(val) == 450
        assert sorted([*train, *val]) == list(range(1797))
        assert np.array_equal(np.bincount(target[val]), np.bincount(target[digits.split_indices(0)[1]]))
        assert np.array_equal(digits.split_indices(seed)[0], train)  # reproducible
    assert not np.array_equal(digits.split_indices(1)[1], digits.split_indices(0)[1])


def test_tensors_match_the_arrays() -> None:
    images, target = digits.load_digits()
    train, val = digits.split_indices()
    train_set, val_set = digits.digits_tensors()
    x, y = val_set.tensors
    assert x.shape == (450, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.long
    assert torch.equal(x, torch.tensor(images[val], dtype=torch.float32).unsqueeze(1) / 16.0)
    assert torch.equal(train_set.tensors[1], torch.from_numpy(target[train]))


def test_same_as_scikit_learn_when_installed() -> None:
    datasets = pytest.importorskip("sklearn.datasets")
    model_selection = pytest.importorskip("sklearn.model_selection")
    reference = datasets.load_digits()
    images, target = digits.load_digits()
    assert np.array_equal(images, reference.images) and np.array_equal(target, reference.target)
    train, val = model_selection.train_test_split(
        list(range(1797)), test_size=450, random_state=0, stratify=reference.target)
    assert digits.split_indices()[0].tolist() == train and digits.split_indices()[1].tolist() == val
