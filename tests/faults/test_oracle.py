"""The oracle agrees with an undisturbed search (so a fault test that fails means a loss)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from search.orchestrate import run_search
from search.spec import parse_spec
from tests.faults.oracle import check_nothing_lost, oracle_trainable, read_oracle


@pytest.mark.slow
def test_undisturbed_search_matches_its_oracle(
    tiny_spec: dict[str, Any], store: dict[str, str]
) -> None:
    spec = parse_spec(tiny_spec)
    run_search(
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
    assert counts["oracle_trials"] == counts["child_runs"] == counts["optuna_complete"] == 8


def test_oracle_detects_a_lost_trial(tiny_spec: dict[str, Any], store: dict[str, str]) -> None:
    """A measurement in the oracle that MLflow lacks must fail the comparison."""
    spec = parse_spec(tiny_spec)
    run_search(
        spec,
        tracking_uri=store["tracking_uri"],
        out=None,
        trainable=oracle_trainable(store["oracle"]),
    )
    # Drop one trial's child run behind the product's back: the oracle must notice.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store["tracking_uri"])
    exp = client.get_experiment_by_name(spec.experiment_name)
    assert exp is not None
    victim = client.search_runs([exp.experiment_id], "tags.`actsweep.role` = 'trial'")[0]
    client.delete_run(victim.info.run_id)
    with pytest.raises(AssertionError):
        check_nothing_lost(
            store["oracle"],
            spec,
            tracking_uri=store["tracking_uri"],
            optuna_storage=store["optuna_storage"],
        )
    assert len(read_oracle(store["oracle"])) == 8
    assert all(json.loads(line)["pid"] for line in Path(store["oracle"]).read_text().splitlines())
