"""Shared pieces of the fault tests: a tiny spec and where its state lives."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.search.conftest import BASE

# The search tests' minimal spec (tests/search/conftest.py), with one seed, no probe and no
# diagnostics, and a budget of two cohorts per activation.
TINY: dict[str, Any] = copy.deepcopy(BASE) | {
    "name": "faults",
    "budget": {"trials_per_activation": 4, "cohort_size": 2},
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
