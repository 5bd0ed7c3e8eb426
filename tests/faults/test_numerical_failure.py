"""Numerical failure end to end: real Ray, MLflow and Optuna on the tiny spec.

1. Real overflow: plain SGD with learning rates of 1e4 to 1e8 makes relu trials' losses NaN or
   infinite. Nothing is lost (the oracle), those trials are recorded as diverged, every Optuna
   trial is COMPLETE with a finite value.
2. Corrupt reports: a trainable whose reports carry NaN and infinite numbers where the driver
   expects finite ones (score, steps, losses). The driver must not crash or hang: every Optuna
   trial ends COMPLETE (finite value) or FAIL, none RUNNING; the child runs match; no NaN or
   infinity reaches Optuna, MLflow's summary metrics or the leaderboard in any format.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from search.orchestrate import run_search
from search.spec import SearchSpec, parse_spec
from tests.faults.oracle import check_nothing_lost, oracle_trainable, read_oracle

NON_FINITE = re.compile(r"(?i)\b(nan|inf|infinity)\b")


def _reject_constant(name: str) -> float:
    raise AssertionError(f"leaderboard JSON holds {name}")


def _assert_clean_leaderboard(board: Any) -> None:
    from search.leaderboard import FORMATS, render

    for fmt in FORMATS:
        text = render(board, fmt)
        if fmt == "json":
            json.loads(text, parse_constant=_reject_constant)
        assert not NON_FINITE.search(text), (fmt, text)


def _optuna_trials(spec: SearchSpec, storage: str) -> dict[str, list[Any]]:
    import optuna

    from search.orchestrate import optuna_storage
    from search.space import study_name

    opened = optuna_storage(storage)
    return {
        act: optuna.load_study(
            study_name=study_name(spec.search_id, act), storage=opened
        ).get_trials(deepcopy=False)
        for act in spec.space.activations
    }


def _child_runs(spec: SearchSpec, tracking_uri: str) -> list[Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(spec.experiment_name)
    assert exp is not None
    return client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`actsweep.search_id` = '{spec.search_id}' "
        "and tags.`actsweep.role` = 'trial'",
        max_results=1000,
    )


@pytest.mark.slow
def test_overflowing_trials_are_diverged_and_nothing_is_lost(
    tiny_spec: dict[str, Any], store: dict[str, str]
) -> None:
    tiny_spec["space"]["activations"] = ["relu"]  # one study keeps the test short
    tiny_spec["space"]["optimizers"] = ["sgd"]
    tiny_spec["space"]["lr"] = {"low": 1e4, "high": 1e8}
    spec = parse_spec(tiny_spec)
    outcome = run_search(
        spec,
        tracking_uri=store["tracking_uri"],
        out=None,
        trainable=oracle_trainable(store["oracle"]),
    )
    counts = check_nothing_lost(
        store["oracle"],
        spec,
        tracking_uri=store["tracking_uri"],
        optuna_storage=store["optuna_storage"],
    )
    assert counts["oracle_trials"] == counts["child_runs"] == counts["optuna_complete"] == 4
    oracle = read_oracle(store["oracle"])
    non_finite = {
        key
        for key, trial in oracle.items()
        if any(not math.isfinite(loss) for _, loss in trial.losses[0])
    }
    assert non_finite, "the lr range was meant to overflow some trials"
    runs = {
        (r.data.tags["activation"], int(r.data.params["optuna_trial"])): r
        for r in _child_runs(spec, store["tracking_uri"])
    }
    for key in non_finite:  # NaN or infinite loss at some step: recorded as diverged
        assert oracle[key].finals[0]["diverged"], key
        m = runs[key].data.metrics
        assert m["diverged"] == 1.0 and m["seed0/diverged"] == 1.0 and m["reached"] == 0.0
        assert 1 <= m["seed0/diverged_step"] <= m["seed0/steps_trained"]
    for run in runs.values():
        assert run.info.status == "FINISHED"
        assert all(math.isfinite(v) for v in run.data.metrics.values()), run.data.metrics
    for trials in _optuna_trials(spec, store["optuna_storage"]).values():
        assert {t.state.name for t in trials} == {"COMPLETE"}
        assert all(t.value is not None and math.isfinite(t.value) for t in trials)
    _assert_clean_leaderboard(outcome.leaderboard)


def corrupting_trainable(config: dict[str, Any], context: Any) -> None:
    """Train for real, then corrupt the report the way a broken worker could."""
    from ray import tune

    from models.convergence import ConvergenceSummary, score
    from search.trainable import run_cohort

    report = run_cohort(config, context)
    nan, inf = math.nan, math.inf
    for i, member in enumerate(report["members"]):
        s = member["summary"]
        kind = int(config["members"][i]["number"]) % 4
        if kind == 0:  # a diverged run whose losses are all non-finite: usable, diverged
            s.update(reached=False, diverged=True, steps_to_target=None, diverged_step=1)
            s.update(initial_loss=nan, final_loss=inf, best_loss=-inf, auc_log_loss=nan)
            member["train_loss"] = [nan] * len(member["train_loss"])
            member["val_loss"] = inf
            member["score"] = score(ConvergenceSummary(**s), context.convergence)
        elif kind == 1:  # claims to have reached the target at a NaN step
            s.update(reached=True, diverged=False, steps_to_target=nan)
        elif kind == 2:  # infinite steps, NaN score
            s["steps_trained"], member["score"] = inf, nan
        # kind 3: untouched
    report["cohort_best_score"] = nan
    tune.report(report)


@pytest.mark.slow
def test_corrupt_numbers_in_reports_never_reach_optuna_or_the_leaderboard(
    tiny_spec: dict[str, Any], store: dict[str, str]
) -> None:
    tiny_spec["space"]["activations"] = ["relu"]
    tiny_spec["budget"] = {"trials_per_activation": 4, "cohort_size": 4}
    spec = parse_spec(tiny_spec)
    outcome = run_search(
        spec, tracking_uri=store["tracking_uri"], out=None, trainable=corrupting_trainable
    )
    trials = _optuna_trials(spec, store["optuna_storage"])
    runs = {
        (r.data.tags["activation"], int(r.data.params["optuna_trial"])): r
        for r in _child_runs(spec, store["tracking_uri"])
    }
    assert len(runs) == sum(len(t) for t in trials.values()) == 4
    states: dict[str, int] = {}
    for act, study_trials in trials.items():
        for t in study_trials:
            states[t.state.name] = states.get(t.state.name, 0) + 1
            run = runs[(act, t.number)]
            if t.state.name == "COMPLETE":
                assert t.value is not None and math.isfinite(t.value)
                assert run.info.status == "FINISHED"
                assert math.isclose(run.data.metrics["score"], t.value)
            else:
                assert t.state.name == "FAIL", t.state
                assert run.info.status == "FAILED"
            kind = t.number % 4
            assert t.state.name == ("COMPLETE" if kind in (0, 3) else "FAIL"), (kind, t.state)
            if kind == 0:  # non-finite losses: recorded as diverged, with no NaN metric
                assert run.data.metrics["diverged"] == 1.0 and run.data.metrics["reached"] == 0.0
            assert all(math.isfinite(v) for v in run.data.metrics.values()), run.data.metrics
    assert "RUNNING" not in states
    # Unusable numbers (a NaN step, infinite steps, a NaN score) fail their trial only.
    assert states == {"COMPLETE": 2, "FAIL": 2}, states
    _assert_clean_leaderboard(outcome.leaderboard)
    from mlflow.tracking import MlflowClient

    parent = MlflowClient(store["tracking_uri"]).get_run(outcome.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert not Path(store["oracle"]).exists()


def _result(**summary: Any) -> dict[str, Any]:
    base = {
        "reached": True,
        "diverged": False,
        "steps_to_target": 50,
        "steps_trained": 50,
        "initial_loss": 2.3,
        "final_loss": 0.4,
        "best_loss": 0.4,
    }
    score = summary.pop("score", 50.0)
    return {"summary": {**base, **summary}, "score": score}


def test_unusable_results_are_named_and_non_finite_losses_of_diverged_runs_are_not() -> None:
    from search.searcher import unusable

    assert unusable(_result(), 200) is None
    nan, inf = math.nan, math.inf
    diverged = {"reached": False, "diverged": True, "steps_to_target": None}
    assert unusable(_result(**diverged, initial_loss=nan, final_loss=inf, score=1e4), 200) is None
    for bad, why in (
        (_result(steps_to_target=nan), "steps_to_target"),
        (_result(steps_to_target=None), "steps_to_target"),
        (_result(steps_trained=inf), "steps_trained"),
        (_result(steps_trained=201), "steps_trained"),
        (_result(score=nan), "score"),
        (_result(score=-inf), "score"),
        (_result(final_loss=nan), "non-finite loss"),
        (_result(reached=1), "booleans"),
        (_result(diverged=True), "both"),
        ({"summary": {}}, "malformed"),
        ({"summary": None, "score": 1.0}, "malformed"),
        (_result(steps_trained="x"), "malformed"),
    ):
        reason = unusable(bad, 200)
        assert reason is not None and why in reason, (bad, reason)
