"""The leaderboard's seed statistics on a hand-made MLflow table with per-seed metrics,
checked against values computed by hand (bootstrap with the fixed seed, Wilcoxon, KM medians)."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest

from search.leaderboard import STAT_COLUMNS, compute_leaderboard, render, trials_table

MAX = 2000


def _trial(
    run_id: str, act: str, steps: list[int], reached: list[bool], diverged: bool = False
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "run_id": run_id,
        "status": "FINISHED",
        "params.activation": act,
        "params.depth": "2",
        "params.init": "auto",
        "params.lr": "0.1",
        "params.optimizer": "momentum",
        "params.max_steps": str(MAX),
        "metrics.final_loss": 0.3,
    }
    for i, (s, r) in enumerate(zip(steps, reached, strict=True)):
        row[f"metrics.seed{i}/steps_to_target"] = float(s)
        row[f"metrics.seed{i}/reached"] = float(r)
        row[f"metrics.seed{i}/diverged"] = float(diverged and not r)
        score = s if r else (MAX * 53.0 if diverged else MAX * 2.0)
        row[f"metrics.seed{i}/score"] = float(score)
    # the aggregate the tracker logs (KM median when defined), written out by hand
    return row


def _board() -> pd.DataFrame:
    c = [True, True, True, False, False]
    rows = [
        {
            **_trial("e", "elu", [100, 200, 300, 400, 500], [True] * 5),
            "metrics.steps_to_target": 300.0,
            "metrics.reached": 1.0,
        },
        {
            **_trial("r", "relu", [110, 220, 330, 440, 550], [True] * 5),
            "metrics.steps_to_target": 330.0,
            "metrics.reached": 1.0,
        },
        # 3 of 5 reached: S(1000) = 4/5, S(1100) = 3/5, S(1200) = 2/5 -> KM median 1200
        {
            **_trial("s", "sigmoid", [1000, 1100, 1200, MAX, MAX], c),
            "metrics.steps_to_target": 1200.0,
            "metrics.reached": 1.0,
        },
        {
            **_trial("t", "tanh", [40, 50, 60, 70, 80], [False] * 5, diverged=True),
            "metrics.steps_to_target": 80.0,
            "metrics.reached": 0.0,
            "metrics.diverged": 1.0,
        },
    ]
    return compute_leaderboard(trials_table(pd.DataFrame(rows)), ["relu", "elu", "tanh", "sigmoid"])


def test_statistics_match_the_hand_computation() -> None:
    records = json.loads(render(_board(), "json"))
    by = {r["activation"]: r for r in records}
    assert [r["activation"] for r in records] == ["elu", "relu", "sigmoid", "tanh"]
    for r in records:
        assert set(STAT_COLUMNS) <= set(r)
    # Bootstrap (2000 draws, default_rng(0)): the KM median of 5 resampled seeds is their 3rd
    # smallest; P(it is the smallest value) = P(Bin(5, 1/5) >= 3) = 0.058 > 2.5 %, the same for
    # the largest, so the 95 % bounds are the extreme values.
    assert (by["elu"]["ci_low"], by["elu"]["ci_high"]) == (100, 500)
    assert (by["relu"]["ci_low"], by["relu"]["ci_high"]) == (110, 550)
    # sigmoid: a resample with >= 3 censored seeds has no median, P = P(Bin(5, 2/5) >= 3) = 0.32,
    # so the upper bound is unbounded (None); the lower is 1000 (P = 0.058).
    assert (by["sigmoid"]["ci_low"], by["sigmoid"]["ci_high"]) == (1000, None)
    assert by["sigmoid"]["steps_to_target"] == 1200 and by["sigmoid"]["success_rate"] == 0.6
    assert (by["tanh"]["ci_low"], by["tanh"]["ci_high"], by["tanh"]["success_rate"]) == (
        None,
        None,
        0.0,
    )
    assert {r["seeds"] for r in records} == {5}
    # Paired Wilcoxon, exact two-sided: elu vs relu, differences -10..-50, all negative:
    # p = 2 / 2^5. relu vs sigmoid: all 5 negative: 0.0625 again. sigmoid vs tanh (every miss
    # counts as MAX + 1 = 2001): differences -1001, -901, -801, 0, 0; zeros dropped, 3 negative:
    # p = 2 / 2^3 = 0.25. The last rank has no next.
    assert by["elu"]["p_vs_next"] == pytest.approx(0.0625)
    assert by["relu"]["p_vs_next"] == pytest.approx(0.0625)
    assert by["sigmoid"]["p_vs_next"] == pytest.approx(0.25)
    assert by["tanh"]["p_vs_next"] is None
    # Ranks never change under resampling here: relu is elu x 1.1 seed by seed (paired), every
    # sigmoid median (>= 1000 or undefined) is worse than relu's (<= 550) and better than tanh,
    # which always diverges.
    assert [r["rank_stability"] for r in records] == [1.0, 1.0, 1.0, 1.0]


def test_single_seed_runs_have_degenerate_statistics() -> None:
    rows = [
        {
            **_trial("a", "elu", [100], [True]),
            "metrics.steps_to_target": 100.0,
            "metrics.reached": 1.0,
        },
        {
            **_trial("b", "relu", [200], [True]),
            "metrics.steps_to_target": 200.0,
            "metrics.reached": 1.0,
        },
    ]
    records = json.loads(render(compute_leaderboard(trials_table(pd.DataFrame(rows))), "json"))
    for r in records:
        assert r["seeds"] == 1 and r["success_rate"] == 1.0
        assert r["ci_low"] is None and r["ci_high"] is None
        assert r["rank_stability"] is None and r["p_vs_next"] is None


def test_runs_without_per_seed_metrics_count_as_one_seed() -> None:
    rows = [
        {
            "run_id": "x",
            "status": "FINISHED",
            "params.activation": "elu",
            "metrics.steps_to_target": 100.0,
            "metrics.reached": 1.0,
            "metrics.score": 100.0,
        }
    ]
    (record,) = json.loads(render(compute_leaderboard(trials_table(pd.DataFrame(rows))), "json"))
    assert record["seeds"] == 1 and record["success_rate"] == 1.0
