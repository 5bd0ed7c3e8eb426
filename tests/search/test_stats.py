"""Seed statistics against hand-computed cases: KM medians with censoring, the trial score,
the bootstrap interval with a fixed seed, rank stability, and the paired Wilcoxon p-value."""

from __future__ import annotations

import numpy as np
import pytest

from search.stats import (
    SeedRuns,
    aggregate_trial,
    bootstrap_ci,
    km_median,
    p_vs_next,
    rank_stability,
    trial_score,
)

MAX = 2000


def _runs(steps: list[float], reached: list[bool], diverged: list[bool] | None = None) -> SeedRuns:
    div = diverged or [False] * len(steps)
    # per-seed scores as models.convergence.score would give: steps when reached, else > MAX
    scores = [
        float(s) if r else (MAX * 53.0 if d else MAX * 2.0)
        for s, r, d in zip(steps, reached, div, strict=True)
    ]
    return SeedRuns(tuple(steps), tuple(reached), tuple(div), tuple(scores), MAX)


def test_km_median_handles_early_censoring() -> None:
    # Censored at 50, events at 100, 200, 300. At 100: 3 at risk, S = 2/3; at 200: 2 at risk,
    # S = 1/3 <= 1/2 -> median 200. (Treating the censored seed as converged at 50 would say 100.)
    assert km_median([50, 100, 200, 300], [False, True, True, True]) == 200
    # Two of three reached: S(100) = 2/3, S(200) = 1/3 -> 200.
    assert km_median([100, 200, 2000], [True, True, False]) == 200
    # Exactly half reached: S(100) = 1/2 -> 100.
    assert km_median([100, 2000], [True, False]) == 100
    # One of three reached: S stays at 2/3 > 1/2 -> undefined.
    assert km_median([100, 2000, 2000], [True, False, False]) is None
    assert km_median([], []) is None


def test_diverged_seed_is_censored_at_max_steps_not_at_its_divergence() -> None:
    # A seed that diverged at step 40 is censored at MAX (it never reaches the target), so it
    # stays "at risk" past the events at 100 and 300: S(100) = 2/3, S(300) = 1/3 -> 300.
    runs = _runs([40, 100, 300], [False, True, True], [True, False, False])
    assert runs.survival() == ([2000.0, 100.0, 300.0], [False, True, True])
    assert km_median(*runs.survival()) == 300
    # Censored at 40 instead would give at-risk 2 at 100: S = 1/2 -> 100 (too optimistic).
    assert km_median([40, 100, 300], [False, True, True]) == 100


def test_trial_score_and_aggregate_keep_reached_below_censored_below_diverged() -> None:
    reached = _runs([100, 200, 2000], [True, True, False])
    assert trial_score(reached) == 200
    censored = _runs([100, 2000, 2000], [True, False, False])
    # no KM median: median of per-seed scores [100, 4000, 4000] = 4000 > MAX
    assert trial_score(censored) == 4000
    diverged = _runs([100, 30, 20], [True, False, False], [False, True, True])
    assert trial_score(diverged) == MAX * 53.0
    assert trial_score(reached) < trial_score(censored) < trial_score(diverged)
    agg = aggregate_trial(reached)
    assert (agg.steps_to_target, agg.reached, agg.diverged) == (200, True, False)
    assert agg.success_rate == pytest.approx(2 / 3) and agg.seeds == 3 and agg.score == 200
    agg = aggregate_trial(censored)
    # no median: steps_to_target is the censoring time, as for a single censored run
    assert (agg.steps_to_target, agg.reached, agg.diverged) == (2000, False, False)
    assert aggregate_trial(diverged).diverged


def test_bootstrap_ci_with_a_fixed_seed_equals_the_hand_computation() -> None:
    runs = _runs([100, 200, 300], [True, True, True])
    # The first 6 draws of default_rng(0) over 3 seeds, written out by hand:
    draws = np.random.default_rng(0).integers(0, 3, size=(6, 3))
    # KM median of a resample without censoring = its 2nd smallest value.
    values = [100, 200, 300]
    medians = sorted(sorted(values[i] for i in row)[1] for row in draws)
    # B = 6: lower bound sorted[floor(0.025 * 6)] = sorted[0], upper sorted[ceil(5.85) - 1] = [5]
    assert bootstrap_ci(runs, samples=6, seed=0) == (medians[0], medians[5])
    # With the default 2000 draws, P(median = 100) = P(median = 300) = 7/27 > 2.5 %.
    assert bootstrap_ci(runs) == (100, 300)
    # Deterministic: the same seed gives the same interval.
    assert bootstrap_ci(runs) == bootstrap_ci(runs)


def test_bootstrap_ci_with_censored_seeds_has_no_finite_upper_bound() -> None:
    # 2 of 3 reached: a resample drawing the censored seed twice or more has no median;
    # P = 7/27 > 2.5 %, so the upper bound is unbounded (None).
    runs = _runs([100, 200, 2000], [True, True, False])
    assert bootstrap_ci(runs) == (100, None)
    assert bootstrap_ci(_runs([100], [True])) == (None, None)  # one seed: no interval
    assert bootstrap_ci(_runs([100, 2000, 2000], [True, False, False])) == (None, None)


def test_rank_stability_counts_resamples_that_keep_the_rank() -> None:
    a = _runs([100, 300], [True, True])
    b = _runs([200, 200], [True, True])
    # Paired resamples of 2 seeds: a's KM median is 100 unless both draws are seed 1 (then 300,
    # and a drops to rank 2). So both keep their rank exactly when a draw is not (1, 1).
    draws = np.random.default_rng(0).integers(0, 2, size=(500, 2))
    expected = float(np.mean(~((draws[:, 0] == 1) & (draws[:, 1] == 1))))
    assert rank_stability([a, b], samples=500, seed=0) == [expected, expected]
    assert 0.6 < expected < 0.9  # ~3/4
    c = _runs([500, 500], [True, True])
    assert rank_stability([b, c]) == [1.0, 1.0]
    assert rank_stability([_runs([1], [True])]) == [None]


def test_p_vs_next_is_the_exact_paired_wilcoxon() -> None:
    this = _runs([100, 200, 300, 400, 500], [True] * 5)
    nxt = _runs([110, 220, 330, 440, 550], [True] * 5)
    # All 5 paired differences negative with distinct magnitudes: W+ = 0, exact two-sided
    # p = 2 * (1 / 2^5) = 0.0625.
    assert p_vs_next(this, nxt) == pytest.approx(0.0625)
    # A seed that missed the target counts as MAX + 1 = 2001; differences -50, -1801, -1
    # (ranks 2, 3, 1, all negative): W+ = 0, p = 2 / 2^3 = 0.25.
    assert p_vs_next(
        _runs([100, 200, 2000], [True, True, True]), _runs([150, 2000, 2000], [True, False, False])
    ) == pytest.approx(0.25)
    assert p_vs_next(this, None) is None
    assert p_vs_next(this, this) is None  # every difference zero
    assert p_vs_next(_runs([100], [True]), _runs([200], [True])) is None
