"""The largest-stable-learning-rate probe: on an activation's best configuration, sweep the
learning rate geometrically upward (lr_best x factor^k) until training diverges.

A learning rate is *stable* when none of its paired seeds diverged. The largest stable lr is
the last stable one below the first unstable one; when every probed lr is stable, it is the
largest probed (a lower bound: ``diverged_at`` is then None); when the best lr itself is
unstable on some seed, it is None. Each round trains `points` learning rates x `seeds`
seeds as one cohort (same paired seeds as the search), so a round costs about one trial.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from models.convergence import Convergence
from models.datasets import Dataset
from models.train import CohortSpec, Member, train_cohort


@dataclass(frozen=True)
class ProbePoint:
    lr: float
    steps_to_target: list[float]
    """Per seed: steps_to_target if reached, else the step observation stopped."""
    reached: list[bool]
    diverged: list[bool]

    @property
    def stable(self) -> bool:
        return not any(self.diverged)


@dataclass(frozen=True)
class ProbeResult:
    activation: str
    depth: int
    init: str
    optimizer: str
    best_lr: float
    points: list[ProbePoint]
    largest_stable_lr: float | None
    diverged_at: float | None
    """The smallest probed lr where some seed diverged (None: none did)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def largest_stable(points: list[ProbePoint]) -> tuple[float | None, float | None]:
    """(largest stable lr, first unstable lr) of points sorted by increasing lr (pure)."""
    stable: float | None = None
    for p in sorted(points, key=lambda p: p.lr):
        if not p.stable:
            return stable, p.lr
        stable = p.lr
    return stable, None


def probe_lr(
    data: Dataset,
    *,
    activation: str,
    depth: int,
    init: str,
    optimizer: str,
    best_lr: float,
    width: int,
    momentum: float,
    batch_size: int,
    seeds: list[int],
    conv: Convergence,
    factor: float = 2.0,
    points: int = 6,
    rounds: int = 3,
) -> ProbeResult:
    """Sweep lr_best x factor^k, k = 0, 1, ..., round by round, until some seed diverges."""
    found: list[ProbePoint] = []
    k = 0
    for _ in range(rounds):
        lrs = [best_lr * factor ** (k + j) for j in range(points)]
        k += points
        members = tuple(Member(init, lr, seed) for lr in lrs for seed in seeds)
        cohort = CohortSpec(
            activation, depth, width, optimizer, momentum, batch_size, members=members
        )
        results = train_cohort(data, cohort, conv)
        n = len(seeds)
        for j, lr in enumerate(lrs):
            runs = results[j * n : (j + 1) * n]
            found.append(
                ProbePoint(
                    lr=lr,
                    steps_to_target=[
                        float(
                            r.summary.steps_to_target
                            if r.summary.reached and r.summary.steps_to_target is not None
                            else r.summary.steps_trained
                        )
                        for r in runs
                    ],
                    reached=[r.summary.reached for r in runs],
                    diverged=[r.summary.diverged for r in runs],
                )
            )
        if any(not p.stable for p in found):
            break
    stable, diverged_at = largest_stable(found)
    return ProbeResult(activation, depth, init, optimizer, best_lr, found, stable, diverged_at)
