"""Issue #7 item 2: workers SIGKILLed mid-trial (one node: Tune reuses actors).

One search, two faults, each checked by its own test: the worker of relu's first cohort is
killed once, and Tune retries the cohort (FailureConfig(max_failures=2)) on a fresh worker;
the worker of tanh's first cohort is killed on every attempt Tune gives it, so its Optuna
trials are told FAIL, its child runs end FAILED (never left RUNNING), and its budget is
asked again. Either way the search completes its full budget with nothing lost.

No checkpoint: a cohort is seconds of training and deterministic in its seeds, so the retry
trains it again from the start and measures exactly what the killed attempt would have.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow.tracking import MlflowClient

from search.orchestrate import optuna_storage, run_search
from search.space import study_name
from search.spec import SearchSpec, parse_spec
from tests.faults.conftest import TINY
from tests.faults.kills import KillMidTraining
from tests.faults.oracle import check_nothing_lost, oracle_trainable, read_oracle

pytestmark = pytest.mark.slow

ATTEMPTS = 1 + 2  # the first try and FailureConfig(max_failures=2) retries


@dataclass(frozen=True)
class Both:
    """Two faults in one trainable (each decides for itself whether a cohort is its own)."""

    once: KillMidTraining
    always: KillMidTraining

    def __call__(self, config: dict[str, Any]) -> None:
        self.once(config)
        self.always(config)


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("killed")
    store = {
        "tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}",
        "optuna_storage": str(tmp / "optuna.journal"),
        "oracle": str(tmp / "oracle.jsonl"),
    }
    spec = parse_spec(copy.deepcopy(TINY))
    faults = Both(
        once=KillMidTraining(str(tmp), "relu", 0, times=1),
        always=KillMidTraining(str(tmp), "tanh", 0, times=ATTEMPTS),
    )
    run_search(
        spec,
        tracking_uri=store["tracking_uri"],
        optuna_storage_location=store["optuna_storage"],
        out=None,
        trainable=oracle_trainable(store["oracle"], fault=faults),
    )
    client = MlflowClient(store["tracking_uri"])
    exp = client.get_experiment_by_name(spec.experiment_name)
    assert exp is not None
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`actsweep.search_id` = '{spec.search_id}' "
        "and tags.`actsweep.role` = 'trial'",
    )
    counts = check_nothing_lost(
        store["oracle"],
        spec,
        tracking_uri=store["tracking_uri"],
        optuna_storage=store["optuna_storage"],
    )
    return {"spec": spec, "store": store, "faults": faults, "runs": runs, "counts": counts}


def _states(spec: SearchSpec, store: dict[str, str], act: str) -> dict[int, str]:
    study = optuna.load_study(
        study_name=study_name(spec.search_id, act), storage=optuna_storage(store["optuna_storage"])
    )
    return {t.number: t.state.name for t in study.get_trials(deepcopy=False)}


def test_search_completes_its_budget_and_nothing_is_lost(killed: dict[str, Any]) -> None:
    spec, counts = killed["spec"], killed["counts"]
    size = spec.budget.cohort_size
    budget = spec.budget.trials_per_activation * len(spec.space.activations)
    # check_nothing_lost passed (in the fixture): MLflow and Optuna agree with the oracle.
    assert counts["oracle_trials"] == counts["optuna_complete"] == budget
    assert counts["child_runs"] == budget + size  # the failed cohort's trials, FAILED
    assert counts["unfinished_child_runs"] == size


def test_worker_killed_once_is_retried_into_one_finished_run_per_trial(
    killed: dict[str, Any],
) -> None:
    spec, store, runs = killed["spec"], killed["store"], killed["runs"]
    # The kill happened mid-training: the killed attempt never wrote its oracle lines,
    # and the cohort's result came from another process.
    (pid,) = killed["faults"].once.killed_pids()
    lines = [json.loads(line) for line in Path(store["oracle"]).read_text().splitlines()]
    pids = {r["pid"] for r in lines if (r["activation"], r["number"]) == ("relu", 0)}
    assert pids and pid not in pids
    assert pid not in {r["pid"] for r in lines}

    victim = next(r for r in runs if r.data.tags["actsweep.trial_key"].endswith("/relu/0"))
    cohort = [
        r for r in runs if r.data.tags["actsweep.cohort"] == victim.data.tags["actsweep.cohort"]
    ]
    keys = Counter(r.data.tags["actsweep.trial_key"] for r in cohort)
    assert len(keys) == spec.budget.cohort_size and set(keys.values()) == {1}
    assert {r.info.status for r in cohort} == {"FINISHED"}
    assert Counter(_states(spec, store, "relu").values()) == {
        "COMPLETE": spec.budget.trials_per_activation
    }


def test_worker_killed_past_max_failures_fails_its_trials_and_the_budget_is_asked_again(
    killed: dict[str, Any],
) -> None:
    spec, store, runs = killed["spec"], killed["store"], killed["runs"]
    size = spec.budget.cohort_size
    assert len(set(killed["faults"].always.killed_pids())) == ATTEMPTS  # each a fresh worker

    tanh = _states(spec, store, "tanh")
    failed = sorted(n for n, s in tanh.items() if s == "FAIL")
    assert 0 in failed and len(failed) == size
    assert Counter(tanh.values()) == {"COMPLETE": spec.budget.trials_per_activation, "FAIL": size}
    status = {r.data.tags["actsweep.trial_key"]: r.info.status for r in runs}
    assert len(status) == len(runs)  # one child run per trial, failed ones included
    assert {status[f"{spec.search_id}/tanh/{n}"] for n in failed} == {"FAILED"}
    assert not {("tanh", n) for n in failed} & set(read_oracle(store["oracle"]))
