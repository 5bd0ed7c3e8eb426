"""The per-activation search space: Optuna trial <-> training member.

One stratum per activation; inside it Optuna searches depth, initializer, learning rate
and optimizer. Trials that share (activation, depth, optimizer) can train as one cohort.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

import optuna

from search.spec import SearchSpec, SpaceSpec


@dataclass(frozen=True)
class TrialParams:
    """What one Optuna trial asks to train (one child run in MLflow)."""

    activation: str
    number: int
    """The Optuna trial number inside this activation's study."""
    depth: int
    init: str
    lr: float
    optimizer: str

    @property
    def shape_key(self) -> tuple[str, int, str]:
        return (self.activation, self.depth, self.optimizer)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def suggest(trial: optuna.Trial, activation: str, space: SpaceSpec) -> TrialParams:
    """Draw (or read back, for partially fixed trials) one configuration."""
    depth = trial.suggest_int("depth", space.depth.low, space.depth.high)
    init = trial.suggest_categorical("init", list(space.initializers))
    lr = trial.suggest_float("lr", space.lr.low, space.lr.high, log=True)
    optimizer = trial.suggest_categorical("optimizer", list(space.optimizers))
    return TrialParams(
        activation=activation,
        number=trial.number,
        depth=int(depth),
        init=str(init),
        lr=float(lr),
        optimizer=str(optimizer),
    )


def derive_seed(base: int, *parts: object) -> int:
    """A 31-bit seed from a base seed and labels, stable across processes and Python runs."""
    text = ":".join([str(base), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF


def member_seed(spec: SearchSpec, seed_index: int) -> int:
    """Seed of run index `seed_index`: the same for every activation and config (paired runs)."""
    return derive_seed(spec.seed, "run", seed_index)


def study_name(search_id: str, activation: str) -> str:
    return f"{search_id}:{activation}"
