"""actsweep's search layer: specs, Optuna/Ray Tune orchestration, MLflow tracking, leaderboards.

Public face for scripts::

    from search import load_leaderboard
    board = load_leaderboard("quickstart", tracking_uri="sqlite:///mlflow.db")
"""

from __future__ import annotations

from typing import Any

__all__ = ["SearchSpec", "SpecError", "load_leaderboard", "load_spec", "parse_spec"]

_LAZY = {
    "SearchSpec": "search.spec",
    "load_spec": "search.spec",
    "parse_spec": "search.spec",
    "SpecError": "search.errors",
    "load_leaderboard": "search.results",
}


def __getattr__(name: str) -> Any:
    # Lazy: `actsweep validate` should not pay for importing MLflow and Ray.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'search' has no attribute {name!r}")
