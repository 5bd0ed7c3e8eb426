"""actsweep's pure-PyTorch core: activations, initializers, MLP cohorts, datasets, convergence
measurement and cohort training. No Ray, Optuna or MLflow here; the search layer builds on
these names.
"""

from __future__ import annotations

from models.activations import ACTIVATIONS, ActivationInfo, get_activation
from models.convergence import Convergence, ConvergenceSummary, check, score, summarize
from models.datasets import DATASETS, Dataset, load_dataset
from models.initializers import INITIALIZERS, Initializer, get_initializer, init_layer, resolve_init
from models.mlp import CohortMLP, MLPShape, build_cohort, build_mlp
from models.registry import UnknownNameError, lookup
from models.train import OPTIMIZERS, CohortSpec, Member, RunResult, train_cohort

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
