"""Shared pieces of the fault tests: a tiny spec and where its state lives."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

TINY: dict[str, Any] = {
    "name": "faults",
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
    "budget": {"trials_per_activation": 4, "cohort_size": 2},
    "sampler": {"name": "tpe", "n_startup_trials": 2},
    "seed": 0,
    "seeds": 1,
    "lr_probe": {"enabled": False},
    "diagnostics": {"enabled": False},
}


@pytest.fixture
def tiny_spec() -> dict[str, Any]:
    return copy.deepcopy(TINY)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A private SQLite MLflow store and its state directory under tmp_path."""
    monkeypatch.delenv("ACTSWEEP_HOME", raising=False)
    db = tmp_path / "mlflow.db"
    return {
        "tracking_uri": f"sqlite:///{db}",
        "optuna_storage": str(tmp_path / ".actsweep" / "optuna.journal"),
        "oracle": str(tmp_path / "oracle.jsonl"),
    }
