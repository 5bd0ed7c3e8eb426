"""The dataset registry: small, offline, deterministic train/validation splits as tensors.

Every builder takes ``(seed, validation_fraction)`` and returns a `Dataset` whose features are
standardised with TRAIN statistics only (a zero std is replaced by 1 so constant features stay
0 instead of becoming NaN). Nothing here touches the network.

=========  ============== =====================================================================
name       task           source and split
=========  ============== =====================================================================
digits     classification sklearn's bundled ``load_digits`` (1797 x 64, 10 classes); split
                          stratified by class with ``random_state=seed``.
mnist1d    classification ``mnist1d.data.make_dataset(get_dataset_args())`` (40 features, 10
                          classes); its own fixed 4000/1000 train/test split is used as
                          train/validation, so ``seed`` and ``validation_fraction`` are ignored.
                          Generation takes ~6 s, so the arrays are cached as .npz under
                          ``$XDG_CACHE_HOME/actsweep`` (default ``~/.cache/actsweep``).
moons      classification sklearn ``make_moons(2000, noise=0.2, random_state=seed)``; stratified
                          split by seed.
spirals    classification three interleaved spiral arms, 500 points each (1500), with seeded
                          noise; stratified split by seed.
teacher    regression     20-dim standard Gaussian inputs (4000 samples, drawn from ``seed``)
                          labelled by a fixed random teacher MLP (20 -> 32 -> 32 -> 1, tanh,
                          weights from a constant seed so the *task* is the same for every seed,
                          as it is for digits); targets standardised with train statistics.
=========  ============== =====================================================================
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import random
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from models.registry import lookup

__all__ = ["DATASETS", "Dataset", "cache_dir", "load_dataset"]

Task = Literal["classification", "regression"]


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/validation split held as CPU tensors. Treat the tensors as read-only: datasets are
    memoised and shared within a process.

    ``eq=False`` keeps identity equality and hashing: field-wise ``==`` on tensors is elementwise
    and would make ``dataset_a == dataset_b`` raise.
    """

    name: str
    task: Task
    x_train: Tensor
    """(N_train, in_features) float32, standardised with train statistics."""
    y_train: Tensor
    """(N_train,) int64 class labels, or (N_train, out_features) float32 regression targets."""
    x_val: Tensor
    y_val: Tensor
    n_classes: int | None
    """Number of classes (classification) or None (regression)."""

    def __post_init__(self) -> None:
        if self.task not in ("classification", "regression"):
            raise ValueError(f"task must be classification or regression, got {self.task!r}")
        for split, x, y in (("train", self.x_train, self.y_train), ("val", self.x_val, self.y_val)):
            if x.dtype != torch.float32 or x.dim() != 2:
                raise ValueError(f"x_{split} must be 2-D float32, got {x.dtype} {tuple(x.shape)}")
            if y.shape[0] != x.shape[0]:
                raise ValueError(f"x_{split} and y_{split} have different lengths")
            if self.task == "classification" and (y.dtype != torch.int64 or y.dim() != 1):
                raise ValueError(f"y_{split} must be 1-D int64 labels for classification")
            if self.task == "regression" and (y.dtype != torch.float32 or y.dim() != 2):
                raise ValueError(f"y_{split} must be 2-D float32 targets for regression")
        if (self.task == "classification") != (self.n_classes is not None):
            raise ValueError("n_classes is required for classification and must be None otherwise")

    @property
    def in_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def out_features(self) -> int:
        """Logits per example (classification) or target dimensions (regression)."""
        if self.n_classes is not None:
            return self.n_classes
        return int(self.y_train.shape[1])


FloatArray = NDArray[np.floating[Any]]


def _standardise(train: FloatArray, *others: FloatArray) -> list[Tensor]:
    """Standardise every array with the train mean/std (features on the last axis)."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)  # a constant feature stays 0 rather than NaN
    return [torch.from_numpy(((a - mean) / std).astype(np.float32)) for a in (train, *others)]


def _split(
    x: FloatArray, y: NDArray[Any], seed: int, validation_fraction: float, stratify: bool
) -> tuple[FloatArray, FloatArray, NDArray[Any], NDArray[Any]]:
    # scikit-learn is imported on first use: it costs ~1 s, and `import models` happens in every
    # worker process whether or not it loads a dataset.
    from sklearn.model_selection import train_test_split

    x_tr, x_va, y_tr, y_va = train_test_split(
        x, y, test_size=validation_fraction, random_state=seed, stratify=y if stratify else None
    )
    return x_tr, x_va, y_tr, y_va


def _classification(
    name: str, x: FloatArray, y: NDArray[np.integer[Any]], seed: int, validation_fraction: float
) -> Dataset:
    x_tr, x_va, y_tr, y_va = _split(x, y, seed, validation_fraction, stratify=True)
    x_train, x_val = _standardise(x_tr, x_va)
    return Dataset(
        name=name,
        task="classification",
        x_train=x_train,
        y_train=torch.from_numpy(np.asarray(y_tr, dtype=np.int64)),
        x_val=x_val,
        y_val=torch.from_numpy(np.asarray(y_va, dtype=np.int64)),
        n_classes=int(np.unique(y).size),
    )


def _digits(seed: int, validation_fraction: float) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()  # bundled with scikit-learn: no download
    return _classification("digits", bunch.data, bunch.target, seed, validation_fraction)


def _moons(seed: int, validation_fraction: float) -> Dataset:
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=2000, noise=0.2, random_state=seed)
    return _classification("moons", x, y, seed, validation_fraction)


SPIRAL_ARMS = 3
SPIRAL_POINTS_PER_ARM = 500


def make_spirals(seed: int, noise: float = 0.2) -> tuple[FloatArray, NDArray[np.int64]]:
    """Three interleaved spiral arms in 2-D (1500 points), labels 0..2.

    Radius grows linearly to 1 along an arm while the angle turns 1.5 revolutions; Gaussian noise
    of ``noise`` radians on the angle makes neighbouring arms overlap slightly at the outside.
    """
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for arm in range(SPIRAL_ARMS):
        r = np.linspace(0.05, 1.0, SPIRAL_POINTS_PER_ARM)
        theta = (
            arm * 2 * np.pi / SPIRAL_ARMS
            + r * 3 * np.pi
            + rng.normal(0.0, noise, SPIRAL_POINTS_PER_ARM)
        )
        xs.append(np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1))
        ys.append(np.full(SPIRAL_POINTS_PER_ARM, arm, dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def _spirals(seed: int, validation_fraction: float) -> Dataset:
    x, y = make_spirals(seed)
    return _classification("spirals", x, y, seed, validation_fraction)


TEACHER_SEED = 20240601
TEACHER_SAMPLES = 4000
TEACHER_IN = 20
TEACHER_WIDTH = 32


def _teacher(seed: int, validation_fraction: float) -> Dataset:
    # The teacher comes from a constant seed and the inputs from `seed`: the seed changes the
    # sample and split, not the function to learn.
    teacher_rng = np.random.default_rng(TEACHER_SEED)
    sizes = [TEACHER_IN, TEACHER_WIDTH, TEACHER_WIDTH, 1]
    # LeCun-scaled weights keep tanh pre-activations O(1): neither saturated nor linear.
    layers = [
        (
            teacher_rng.normal(0.0, 1.0 / np.sqrt(n_in), (n_in, n_out)),
            teacher_rng.normal(0.0, 0.1, n_out),
        )
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)
    ]
    x = np.random.default_rng(seed).normal(size=(TEACHER_SAMPLES, TEACHER_IN))
    h = x
    for i, (w, b) in enumerate(layers):
        h = h @ w + b
        if i < len(layers) - 1:
            h = np.tanh(h)
    x_tr, x_va, y_tr, y_va = _split(x, h, seed, validation_fraction, stratify=False)
    x_train, x_val = _standardise(x_tr, x_va)
    y_train, y_val = _standardise(y_tr, y_va)
    return Dataset(
        name="teacher",
        task="regression",
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        n_classes=None,
    )


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/actsweep``, default ``~/.cache/actsweep`` (read at call time)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "actsweep"


_CACHE_FORMAT = 2
_MNIST1D_KEYS = ("x", "y", "x_test", "y_test")


def _mnist1d_arrays() -> dict[str, NDArray[Any]]:
    """mnist1d's train/test arrays, from the on-disk cache or generated (then cached)."""
    # The cache key needs no import of mnist1d (a second and a half: it pulls in matplotlib and
    # scipy): its dataset arguments are the defaults of the installed version, so the version
    # identifies them.
    key_source = json.dumps(
        {"mnist1d": importlib.metadata.version("mnist1d"), "format": _CACHE_FORMAT},
        sort_keys=True,
    )
    digest = hashlib.sha256(key_source.encode()).hexdigest()[:16]
    path = cache_dir() / f"mnist1d-{digest}.npz"
    try:
        with np.load(path) as cached:
            return {k: cached[k] for k in _MNIST1D_KEYS}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        pass  # missing or damaged cache: regenerate and overwrite it

    import mnist1d.data  # imported lazily: it pulls in requests and matplotlib

    # make_dataset reseeds the global `random` and numpy RNGs; restore them so loading a dataset
    # never changes the caller's random state.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    arrays = {k: np.asarray(data[k]) for k in _MNIST1D_KEYS}

    path.parent.mkdir(parents=True, exist_ok=True)
    # Write to a temp file in the same directory and rename: concurrent workers either see the
    # complete file or none, never a half-written one.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f, x=arrays["x"], y=arrays["y"], x_test=arrays["x_test"], y_test=arrays["y_test"]
            )
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return arrays


def _mnist1d(seed: int, validation_fraction: float) -> Dataset:
    del seed, validation_fraction  # mnist1d ships one fixed split (documented above)
    arrays = _mnist1d_arrays()
    x_train, x_val = _standardise(
        arrays["x"].astype(np.float64), arrays["x_test"].astype(np.float64)
    )
    y = arrays["y"].astype(np.int64)
    return Dataset(
        name="mnist1d",
        task="classification",
        x_train=x_train,
        y_train=torch.from_numpy(y),
        x_val=x_val,
        y_val=torch.from_numpy(arrays["y_test"].astype(np.int64)),
        n_classes=int(np.unique(y).size),
    )


DATASETS: dict[str, Callable[[int, float], Dataset]] = {
    "digits": _digits,
    "mnist1d": _mnist1d,
    "moons": _moons,
    "spirals": _spirals,
    "teacher": _teacher,
}


@functools.lru_cache(maxsize=32)
def _load(name: str, seed: int, validation_fraction: float) -> Dataset:
    return DATASETS[name](seed, validation_fraction)


def load_dataset(name: str, seed: int = 0, validation_fraction: float = 0.2) -> Dataset:
    """The dataset ``name`` for ``seed``, memoised per process.

    Raises:
        UnknownNameError: listing the valid dataset names.
        ValueError: if validation_fraction is not in (0, 1).
    """
    lookup(DATASETS, name, "dataset")
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    # Normalise before the cache so 'Digits' and 'digits' share one entry.
    return _load(name.strip().lower(), int(seed), float(validation_fraction))
