"""actsweep's pure-PyTorch core: activations, initializers, MLP cohorts, datasets, convergence
measurement and cohort training. No Ray, Optuna or MLflow here; the search layer builds on
these names.

The names below are loaded on first use (PEP 562), so `import models.convergence` (pure
Python) does not import PyTorch: the search driver and Ray's worker start-up stay light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ACTIVATIONS": "activations",
    "ActivationInfo": "activations",
    "get_activation": "activations",
    "Convergence": "convergence",
    "ConvergenceSummary": "convergence",
    "check": "convergence",
    "score": "convergence",
    "summarize": "convergence",
    "DATASETS": "datasets",
    "Dataset": "datasets",
    "load_dataset": "datasets",
    "INITIALIZERS": "initializers",
    "Initializer": "initializers",
    "get_initializer": "initializers",
    "init_layer": "initializers",
    "resolve_init": "initializers",
    "CohortMLP": "mlp",
    "MLPShape": "mlp",
    "build_cohort": "mlp",
    "build_mlp": "mlp",
    "UnknownNameError": "registry",
    "lookup": "registry",
    "OPTIMIZERS": "train",
    "CohortSpec": "train",
    "Member": "train",
    "RunResult": "train",
    "train_cohort": "train",
}

__all__ = [
    "ACTIVATIONS",
    "DATASETS",
    "INITIALIZERS",
    "OPTIMIZERS",
    "ActivationInfo",
    "CohortMLP",
    "CohortSpec",
    "Convergence",
    "ConvergenceSummary",
    "Dataset",
    "Initializer",
    "MLPShape",
    "Member",
    "RunResult",
    "UnknownNameError",
    "build_cohort",
    "build_mlp",
    "check",
    "get_activation",
    "get_initializer",
    "init_layer",
    "load_dataset",
    "lookup",
    "resolve_init",
    "score",
    "summarize",
    "train_cohort",
]
assert sorted(__all__) == sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"models.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from models.activations import ACTIVATIONS, ActivationInfo, get_activation
    from models.convergence import Convergence, ConvergenceSummary, check, score, summarize
    from models.datasets import DATASETS, Dataset, load_dataset
    from models.initializers import (
        INITIALIZERS,
        Initializer,
        get_initializer,
        init_layer,
        resolve_init,
    )
    from models.mlp import CohortMLP, MLPShape, build_cohort, build_mlp
    from models.registry import UnknownNameError, lookup
    from models.train import OPTIMIZERS, CohortSpec, Member, RunResult, train_cohort
