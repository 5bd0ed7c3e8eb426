"""Every registered dataset: shapes, dtypes, standardisation, determinism, seeds, caching."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from models import DATASETS, Dataset, UnknownNameError, load_dataset
from models.datasets import cache_dir

# mnist1d takes ~6 s to generate; its own test below covers it with a private cache.
FAST = sorted(set(DATASETS) - {"mnist1d"})
SEEDED_SPLIT = {"digits", "moons", "spirals", "teacher"}

EXPECTED = {
    # name: (task, n_total, in_features, out_features)
    "digits": ("classification", 1797, 64, 10),
    "moons": ("classification", 2000, 2, 2),
    "spirals": ("classification", 1500, 2, 3),
    "teacher": ("regression", 4000, 20, 1),
}


def _check_contract(data: Dataset) -> None:
    for x in (data.x_train, data.x_val):
        assert x.dtype == torch.float32 and x.dim() == 2 and torch.isfinite(x).all()
    if data.task == "classification":
        assert data.y_train.dtype == torch.int64 and data.y_train.dim() == 1
        assert data.n_classes is not None
        assert set(data.y_train.unique().tolist()) == set(range(data.n_classes))
        assert int(data.y_val.max()) < data.n_classes
        assert data.out_features == data.n_classes
    else:
        assert data.y_train.dtype == torch.float32 and data.y_train.dim() == 2
        assert data.n_classes is None
        assert data.out_features == data.y_train.shape[1]
        # Targets are standardised with train statistics too.
        torch.testing.assert_close(data.y_train.mean(0), torch.zeros(1), atol=1e-4, rtol=0)
        y_std = data.y_train.std(0, unbiased=False)
        torch.testing.assert_close(y_std, torch.ones(1), atol=1e-3, rtol=0)
    assert data.in_features == data.x_train.shape[1] == data.x_val.shape[1]
    mean = data.x_train.mean(0)
    std = data.x_train.std(0, unbiased=False)
    assert mean.abs().max().item() < 1e-4
    # Constant features (digits has some blank pixels) stay exactly 0 instead of NaN.
    constant = std < 1e-6
    assert torch.all(data.x_train[:, constant] == 0)
    assert (std[~constant] - 1).abs().max().item() < 1e-3


@pytest.mark.parametrize("name", FAST)
def test_contract_shapes_and_standardisation(name: str) -> None:
    data = DATASETS[name](0, 0.2)
    _check_contract(data)
    task, n_total, in_features, out_features = EXPECTED[name]
    assert data.task == task and data.name == name
    assert data.in_features == in_features and data.out_features == out_features
    assert data.x_train.shape[0] + data.x_val.shape[0] == n_total
    assert data.x_val.shape[0] == pytest.approx(0.2 * n_total, abs=1)


@pytest.mark.parametrize("name", FAST)
def test_deterministic_and_seed_changes_the_split(name: str) -> None:
    a, b, c = DATASETS[name](3, 0.25), DATASETS[name](3, 0.25), DATASETS[name](4, 0.25)
    for field in ("x_train", "y_train", "x_val", "y_val"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert name in SEEDED_SPLIT
    assert not torch.equal(a.x_train, c.x_train)


def test_classification_splits_are_stratified() -> None:
    data = DATASETS["digits"](0, 0.2)
    train_freq = torch.bincount(data.y_train).double() / len(data.y_train)
    val_freq = torch.bincount(data.y_val).double() / len(data.y_val)
    assert (train_freq - val_freq).abs().max().item() < 0.01


def test_validation_uses_train_statistics_only() -> None:
    data = DATASETS["moons"](0, 0.5)
    # The val split is standardised with the train mean/std, so its own stats are merely close.
    assert not torch.allclose(data.x_val.mean(0), torch.zeros(2), atol=1e-6)
    assert data.x_val.mean(0).abs().max().item() < 0.2


def test_load_dataset_is_memoised_and_normalises_names() -> None:
    a = load_dataset("digits", seed=1)
    assert load_dataset(" Digits", seed=1) is a
    assert load_dataset("digits", seed=2) is not a
    with pytest.raises(UnknownNameError, match="unknown dataset 'cifar'; valid: digits, mnist1d"):
        load_dataset("cifar")
    with pytest.raises(ValueError, match="validation_fraction"):
        load_dataset("digits", validation_fraction=1.0)


def test_dataset_pickles_and_validates() -> None:
    data = DATASETS["spirals"](0, 0.2)
    clone = pickle.loads(pickle.dumps(data))
    assert torch.equal(clone.x_train, data.x_train) and clone.n_classes == 3
    with pytest.raises(ValueError, match="int64"):
        Dataset(
            "bad", "classification", data.x_train, data.y_train.float(), data.x_val, data.y_val, 3
        )


def test_mnist1d_is_generated_once_then_read_from_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "actsweep"
    np_state, py_state = np.random.get_state(), random.getstate()
    np_next, py_next = np.random.random(), random.random()
    np.random.set_state(np_state)
    random.setstate(py_state)
    first = DATASETS["mnist1d"](0, 0.2)
    # make_dataset reseeds numpy and random globally; the loader must undo that.
    assert (np.random.random(), random.random()) == (np_next, py_next)
    files = list((tmp_path / "actsweep").iterdir())
    assert len(files) == 1 and files[0].name.startswith("mnist1d-") and files[0].suffix == ".npz"
    mtime = os.stat(files[0]).st_mtime_ns

    second = DATASETS["mnist1d"](5, 0.5)  # seed and fraction are ignored: one fixed split
    assert os.stat(files[0]).st_mtime_ns == mtime
    _check_contract(first)
    assert first.x_train.shape == (4000, 40) and first.x_val.shape == (1000, 40)
    assert first.n_classes == 10
    for field in ("x_train", "y_train", "x_val", "y_val"):
        assert torch.equal(getattr(first, field), getattr(second, field))

    files[0].write_bytes(b"not a zip")  # a damaged cache is regenerated, not fatal
    third = DATASETS["mnist1d"](0, 0.2)
    assert torch.equal(third.x_train, first.x_train)
