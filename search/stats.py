"""Statistics over paired seeds: censoring-aware medians, the one value Optuna is told per trial,
and the leaderboard's confidence intervals, rank stability and paired tests.

Pure functions over plain numbers (no MLflow, no Optuna), so every number can be recomputed by
hand from the per-seed metrics of the child runs.

Survival view of one seed
-------------------------
A seed that reached the target is an *event* at its ``steps_to_target``. A seed that did not is
*censored*: a censored seed is censored at its last observed step, and a diverged seed at
``max_steps`` -- it never reaches the target, and every seed is watched up to ``max_steps`` at
most, so censoring it any earlier would pretend it still had a chance the others did not.
Censored seeds are never dropped and never averaged as if they had converged.

- `km_median`: the Kaplan-Meier median, the smallest event time t with S(t) <= 1/2; undefined
  (None) while more than half the seeds can still be "not yet reached". With every censoring at
  or after the last event (the common case here), it is the ceil(n/2)-th smallest event time.
- `trial_score`: the KM median when defined (<= max_steps); otherwise the ordinary median of the
  per-seed `models.convergence.score` values. More than half the seeds then scored above
  max_steps, so the median does too: finite, and reached < censored < diverged still holds
  (a trial with a KM median always beats one without).

Leaderboard statistics (for each activation's best configuration; the selection of that
configuration is held fixed)
-----------------------------------------------------------------------------------------------
- ``ci_low``/``ci_high``: a 95 % percentile bootstrap of the KM median over seeds (resampled
  with replacement, `BOOTSTRAP_SAMPLES` draws from ``numpy.random.default_rng(BOOTSTRAP_SEED)``);
  bounds are the order statistics ``sorted[floor(0.025 B)]`` and ``sorted[ceil(0.975 B) - 1]``.
  A resample without a median counts as +infinity, so ``ci_high`` is None when the upper bound is
  unbounded (the target is missed too often to bound it); both are None when the run has no
  median or fewer than 2 seeds.
- ``success_rate``: reached seeds / seeds.
- ``rank_stability``: the same resampled seed indices for every activation (paired), each
  activation's trial score recomputed on them, activations re-ranked; the fraction of resamples in
  which the activation keeps its rank (its rank by trial score on all seeds, which is the
  leaderboard rank among activations that reached the target). None with fewer than 2 seeds.
- ``p_vs_next``: two-sided Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, exact for small
  n) between this activation's best configuration and the next-ranked activation's, paired by
  seed index; a seed that did not reach counts as ``max_steps + 1`` (worse than any reached
  seed, tied with every other miss); zero differences are dropped (scipy's default
  ``zero_method="wilcox"``), so exact p-values follow the count of nonzero pairs. None for the
  last rank, with fewer than 2 pairs, or when every paired difference is zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BOOTSTRAP_SAMPLES",
    "BOOTSTRAP_SEED",
    "SeedRuns",
    "TrialAggregate",
    "aggregate_trial",
    "bootstrap_ci",
    "censored_value",
    "km_median",
    "median",
    "p_vs_next",
    "rank_stability",
    "trial_score",
]

BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0
CI_LEVEL = 0.95


@dataclass(frozen=True)
class SeedRuns:
    """The per-seed outcomes of one configuration, in seed-index order (what MLflow holds)."""

    steps: tuple[float, ...]
    """steps_to_target when reached, else the step observation stopped (survival convention)."""
    reached: tuple[bool, ...]
    diverged: tuple[bool, ...]
    scores: tuple[float, ...]
    """models.convergence.score of each seed."""
    max_steps: int

    def __post_init__(self) -> None:
        n = len(self.steps)
        if not (len(self.reached) == len(self.diverged) == len(self.scores) == n):
            raise ValueError("steps, reached, diverged and scores must have one entry per seed")

    @property
    def n(self) -> int:
        return len(self.steps)

    def take(self, idx: Sequence[int]) -> SeedRuns:
        """The seeds at positions ``idx`` (a bootstrap resample)."""
        return SeedRuns(
            tuple(self.steps[i] for i in idx),
            tuple(self.reached[i] for i in idx),
            tuple(self.diverged[i] for i in idx),
            tuple(self.scores[i] for i in idx),
            self.max_steps,
        )

    def survival(self) -> tuple[list[float], list[bool]]:
        """(time, event) per seed, with diverged seeds censored at max_steps."""
        times = [
            float(self.max_steps) if (d and not r) else float(s)
            for s, r, d in zip(self.steps, self.reached, self.diverged, strict=True)
        ]
        return times, list(self.reached)


def km_median(times: Sequence[float], events: Sequence[bool]) -> float | None:
    """Kaplan-Meier median: the smallest event time t with S(t) <= 1/2, else None.

    A censoring at the same time as an event counts as still at risk at that time (the usual
    convention: censoring happens just after the events).
    """
    if len(times) != len(events):
        raise ValueError("times and events must have the same length")
    survival = 1.0
    for t in sorted({float(t) for t, e in zip(times, events, strict=True) if e}):
        at_risk = sum(1 for u in times if u >= t)
        deaths = sum(1 for u, e in zip(times, events, strict=True) if e and u == t)
        survival *= 1.0 - deaths / at_risk
        if survival <= 0.5 + 1e-12:
            return t
    return None


def median(values: Sequence[float]) -> float:
    """The ordinary median (mean of the two middle values for an even count)."""
    if not values:
        raise ValueError("median of no values")
    return float(np.median(np.asarray(values, dtype=float)))


def trial_score(runs: SeedRuns) -> float:
    """The one finite value Optuna minimises for a trial (see the module docstring)."""
    times, events = runs.survival()
    km = km_median(times, events)
    if km is not None:
        return km
    return median(runs.scores)


@dataclass(frozen=True)
class TrialAggregate:
    """What a trial's child run reports as its own summary."""

    steps_to_target: float
    """KM median when defined; else the censoring time (the largest observed step)."""
    reached: bool
    """Whether the KM median is defined."""
    diverged: bool
    """More than half the seeds diverged."""
    success_rate: float
    seeds: int
    score: float


def aggregate_trial(runs: SeedRuns) -> TrialAggregate:
    times, events = runs.survival()
    km = km_median(times, events)
    return TrialAggregate(
        steps_to_target=km if km is not None else max(runs.steps),
        reached=km is not None,
        diverged=sum(runs.diverged) > runs.n / 2,
        success_rate=sum(runs.reached) / runs.n,
        seeds=runs.n,
        score=trial_score(runs),
    )


def _resamples(n: int, samples: int, seed: int) -> np.ndarray:
    """(samples, n) seed indices drawn with replacement; the same draws for every caller."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(samples, n))


def _bounds(sorted_values: Sequence[float]) -> tuple[float, float]:
    b = len(sorted_values)
    alpha = (1.0 - CI_LEVEL) / 2.0
    lo = sorted_values[int(math.floor(alpha * b))]
    hi = sorted_values[int(math.ceil((1.0 - alpha) * b)) - 1]
    return lo, hi


def bootstrap_ci(
    runs: SeedRuns, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float | None, float | None]:
    """95 % percentile bootstrap interval of the KM median over seeds (see module docstring)."""
    times, events = runs.survival()
    if runs.n < 2 or km_median(times, events) is None:
        return None, None
    medians = []
    for idx in _resamples(runs.n, samples, seed):
        m = km_median([times[i] for i in idx], [events[i] for i in idx])
        medians.append(math.inf if m is None else m)
    lo, hi = _bounds(sorted(medians))
    return lo, (hi if math.isfinite(hi) else None)


def _ranks(scores: Sequence[float]) -> list[int]:
    # Rank 1 = lowest score; ties share the better rank, so a tie never "loses" a rank.
    return [1 + sum(1 for other in scores if other < s) for s in scores]


def rank_stability(
    runs: Sequence[SeedRuns], samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED
) -> list[float | None]:
    """For each configuration, the fraction of paired seed resamples in which it keeps its rank.

    ``runs`` are the best configurations of the ranked activations. The reference rank is the
    rank by `trial_score` on all seeds (for activations that reached the target, the leaderboard
    order); ties share the better rank. Seeds are resampled jointly (paired) when every
    configuration has the same number of seeds, else independently per configuration.
    """
    if not runs:
        return []
    if any(r.n < 2 for r in runs):
        return [None] * len(runs)
    reference = _ranks([trial_score(r) for r in runs])
    counts = {r.n for r in runs}
    kept = [0] * len(runs)
    if len(counts) == 1:
        draws = [_resamples(runs[0].n, samples, seed)] * len(runs)
    else:
        draws = [_resamples(r.n, samples, seed + k) for k, r in enumerate(runs)]
    for b in range(samples):
        scores = [trial_score(r.take(list(draws[k][b]))) for k, r in enumerate(runs)]
        for k, rank in enumerate(_ranks(scores)):
            kept[k] += rank == reference[k]
    return [k / samples for k in kept]


def censored_value(runs: SeedRuns) -> list[float]:
    """Per-seed steps with every seed that did not reach set to max_steps + 1."""
    return [
        float(s) if r else float(runs.max_steps + 1)
        for s, r in zip(runs.steps, runs.reached, strict=True)
    ]


def p_vs_next(this: SeedRuns, nxt: SeedRuns | None) -> float | None:
    """Two-sided paired Wilcoxon signed-rank p-value, paired by seed index (module docstring)."""
    if nxt is None:
        return None
    from scipy.stats import wilcoxon

    n = min(this.n, nxt.n)
    x = censored_value(this)[:n]
    y = censored_value(nxt)[:n]
    if n < 2 or all(a == b for a, b in zip(x, y, strict=True)):
        return None
    result = wilcoxon(x, y, alternative="two-sided")
    p = float(result.pvalue)
    return p if math.isfinite(p) else None
