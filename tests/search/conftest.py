"""Shared fixtures for search tests: a minimal valid spec as a dict and as a file."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

BASE: dict[str, Any] = {
    "name": "tiny",
    "dataset": "digits",
    "model": {"width": 16},
    "space": {
        "activations": ["relu", "tanh"],
        "depth": {"low": 1, "high": 2},
        "initializers": ["auto"],
        "lr": {"low": 0.05, "high": 0.5},
        "optimizers": ["momentum"],
        "batch_size": 64,
    },
    "convergence": {"target_loss": 0.5, "max_steps": 200, "eval_every": 25},
    "budget": {"trials_per_activation": 3, "cohort_size": 3},
    "sampler": {"name": "tpe", "n_startup_trials": 2},
    "seed": 0,
}


@pytest.fixture
def base_spec() -> dict[str, Any]:
    return copy.deepcopy(BASE)


def write_spec(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
