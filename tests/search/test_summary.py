"""Leaderboard summary runs and idempotent run creation, on a real (SQLite) MLflow store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from search.leaderboard import compute_leaderboard, to_records
from search.summary import (
    TAG_LEADERBOARD,
    leaderboard_filter,
    log_summary_runs,
    records_from_runs,
    summary_payload,
)
from search.tracking import create_run_once, runs_tagged


def _trials() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run_id": ["a1", "a2", "b1", "c1"],
            "status": ["FINISHED", "FINISHED", "FINISHED", "FAILED"],
            "activation": ["relu", "relu", "tanh", "gelu"],
            "depth": [2, 3, 1, None],
            "init": ["auto", "xavier_normal", "auto", None],
            "lr": [0.1, 0.25, 0.05, None],
            "optimizer": ["momentum"] * 3 + [None],
            "reached": [True, True, False, False],
            "diverged": [False, False, False, False],
            "steps_to_target": [75.0, 50.0, 200.0, None],
            "final_loss": [0.3, 0.2, 0.9, None],
        }
    )


@pytest.fixture
def board() -> pd.DataFrame:
    return compute_leaderboard(_trials(), ["relu", "tanh", "gelu"])


@pytest.fixture(scope="module")
def db_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    # One store for the module: creating a SQLite store runs MLflow's migrations (seconds).
    return f"sqlite:///{tmp_path_factory.mktemp('summary') / 'mlflow.db'}"


@pytest.fixture
def store(db_uri: str, request: pytest.FixtureRequest) -> tuple[MlflowClient, str, str]:
    client = MlflowClient(db_uri)
    name = f"exp-{request.node.name}"
    root = Path(db_uri.removeprefix("sqlite:///")).parent / "mlruns" / name
    return client, client.create_experiment(name, artifact_location=root.as_uri()), db_uri


def _parent(client: MlflowClient, exp: str, search_id: str) -> str:
    return client.create_run(
        exp, tags={"actsweep.role": "search", "actsweep.search_id": search_id}
    ).info.run_id


def test_payload_round_trips_through_search_runs_rows(board: pd.DataFrame) -> None:
    records = to_records(board)
    rows = []
    for rec in records:
        params, metrics = summary_payload(rec)
        assert "steps_to_target" not in metrics or rec["steps_to_target"] is not None
        row: dict[str, Any] = {f"params.{k}": v for k, v in params.items()}
        row.update({f"metrics.{k}": v for k, v in metrics.items()})
        rows.append(row)
    # search_runs gives NaN for what a run lacks; rows come back in any order
    frame = pd.DataFrame(rows[::-1])
    assert records_from_runs(frame) == records
    gelu = next(r for r in records if r["activation"] == "gelu")
    assert gelu["run_id"] is None and gelu["depth"] is None and gelu["reached"] is False


def test_summary_runs_are_plain_mlflow_data_and_idempotent(
    store: tuple[MlflowClient, str, str], board: pd.DataFrame
) -> None:
    client, exp, uri = store
    parent = _parent(client, exp, "s-1")
    first = log_summary_runs(client, exp, parent, "s-1", "s", board)
    assert len(first) == 3
    # finishing again (a resumed search) changes nothing
    assert log_summary_runs(client, exp, parent, "s-1", "s", board) == first
    mlflow.set_tracking_uri(uri)
    rows = mlflow.search_runs(
        experiment_ids=[exp],
        filter_string=leaderboard_filter("s-1"),
        order_by=["metrics.rank ASC"],
    )
    assert list(rows["run_id"]) == first
    assert records_from_runs(rows) == to_records(board)
    assert set(rows["tags.mlflow.parentRunId"]) == {parent}
    assert set(rows["status"]) == {"FINISHED"}
    # a row that changed is replaced, not added
    changed = board.copy()
    changed.loc[changed["activation"] == "tanh", "trials"] = 2
    again = log_summary_runs(client, exp, parent, "s-1", "s", changed)
    assert again[0] == first[0] and again[2] == first[2] and again[1] != first[1]
    rows = mlflow.search_runs(experiment_ids=[exp], filter_string=leaderboard_filter("s-1"))
    assert len(rows) == 3 and records_from_runs(rows) == to_records(changed)


def test_two_searches_in_one_experiment_do_not_mix(
    store: tuple[MlflowClient, str, str], board: pd.DataFrame
) -> None:
    client, exp, uri = store
    log_summary_runs(client, exp, _parent(client, exp, "s-1"), "s-1", "s", board)
    other = compute_leaderboard(_trials().iloc[:2], ["relu"])
    log_summary_runs(client, exp, _parent(client, exp, "s-2"), "s-2", "s", other)
    mlflow.set_tracking_uri(uri)
    one = mlflow.search_runs(experiment_ids=[exp], filter_string=leaderboard_filter("s-1"))
    two = mlflow.search_runs(experiment_ids=[exp], filter_string=leaderboard_filter("s-2"))
    assert len(one) == 3 and len(two) == 1
    assert set(one[f"tags.{TAG_LEADERBOARD}"]) == {"s-1"}
    assert records_from_runs(two) == to_records(other)


class _RetriedPost(MlflowClient):
    """A client whose create_run behaves like a POST retried after its answer was lost."""

    def __init__(self, uri: str, mode: str) -> None:
        super().__init__(uri)
        self.mode = mode
        self.calls = 0

    def create_run(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == 1:
            super().create_run(*args, **kwargs)  # the server did create it ...
            if self.mode == "lost":
                raise MlflowException(
                    "API request failed: Max retries exceeded"
                )  # ... but no answer
        return super().create_run(*args, **kwargs)  # "twin": the retry created another


@pytest.mark.parametrize("mode", ["twin", "lost"])
def test_create_run_once_leaves_exactly_one_run(
    store: tuple[MlflowClient, str, str], mode: str
) -> None:
    _, exp, uri = store
    client = _RetriedPost(uri, mode)
    key = {"actsweep.role": "trial", "actsweep.trial_key": "s-1/relu/0"}
    run_id = create_run_once(client, exp, key, tags=dict(key), run_name="relu-d1-0000")
    assert runs_tagged(client, exp, key) == [run_id]
    # "lost": the run the server made is found by its key and reused, never created again
    assert client.calls == 1
    deleted = client.search_runs([exp], run_view_type=mlflow.entities.ViewType.DELETED_ONLY)
    assert len(deleted) == (1 if mode == "twin" else 0)
