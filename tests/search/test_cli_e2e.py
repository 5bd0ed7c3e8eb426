"""End to end through the real `actsweep` CLI: local Ray, SQLite MLflow store, Optuna journal.

These start real processes (Ray, MLflow's store) with tiny budgets; they check what a user
sees (exit codes, leaderboard output) and what lands in MLflow and Optuna.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pytest

from tests.search.conftest import write_spec

pytestmark = pytest.mark.slow

ACTSWEEP = [sys.executable, "-m", "search.cli"]
REPO = Path(__file__).resolve().parents[2]


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    # A private HOME keeps Ray's auth token and any cache out of the real home directory.
    env["HOME"] = str(tmp / "home")
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("ACTSWEEP_HOME", None)
    env["PYTHONPATH"] = str(REPO)
    env["XDG_CACHE_HOME"] = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
    return env


def actsweep(tmp: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    (tmp / "home").mkdir(exist_ok=True)
    return subprocess.run(
        [*ACTSWEEP, *args], cwd=tmp, env=_env(tmp), capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One real search shared by the assertions below."""
    from tests.search.conftest import BASE

    tmp = tmp_path_factory.mktemp("e2e")
    spec = write_spec(tmp / "tiny.yaml", BASE)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    proc = actsweep(tmp, "run", str(spec), "--tracking-uri", uri)
    return {"tmp": tmp, "spec": spec, "uri": uri, "proc": proc}


def test_run_prints_progress_and_a_row_per_activation(searched: dict[str, Any]) -> None:
    proc = searched["proc"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "[6/6" in out  # live progress reached the total
    table = out[out.index("leaderboard of") :].splitlines()
    rows = [line.split() for line in table[3:] if line.strip()]
    assert sorted(r[1] for r in rows) == ["relu", "tanh"]
    assert [r[0] for r in rows] == ["1", "2"]


def test_mlflow_holds_one_parent_and_one_finished_child_per_trial(searched: dict[str, Any]) -> None:
    mlflow.set_tracking_uri(searched["uri"])
    runs = mlflow.search_runs(experiment_names=["tiny"])
    parents = runs[runs["tags.actsweep.role"] == "search"]
    children = runs[runs["tags.actsweep.role"] == "trial"]
    assert len(parents) == 1
    parent_id = parents["run_id"].iloc[0]
    assert parents["status"].iloc[0] == "FINISHED"
    assert parents["params.space.activations"].iloc[0] == "relu,tanh"
    journal = searched["tmp"] / ".actsweep" / "optuna.journal"
    assert parents["tags.actsweep.optuna_storage"].iloc[0] == str(journal)
    assert len(children) == 6
    assert set(children["status"]) == {"FINISHED"}
    assert set(children["tags.mlflow.parentRunId"]) == {parent_id}
    assert children["tags.actsweep.trial_key"].is_unique
    for col in (
        "params.activation",
        "params.depth",
        "params.init",
        "params.lr",
        "metrics.steps_to_target",
    ):
        assert children[col].notna().all(), col
    assert sorted(children["params.activation"].value_counts().to_dict().items()) == [
        ("relu", 3),
        ("tanh", 3),
    ]
    # the loss curve is a step metric
    client = mlflow.MlflowClient(searched["uri"])
    curve = client.get_metric_history(children["run_id"].iloc[0], "train/loss")
    assert len(curve) >= 1 and all(math.isfinite(m.value) for m in curve)
    assert [m.step for m in curve] == sorted(m.step for m in curve)
    arts = {a.path for a in client.list_artifacts(parent_id)}
    assert {
        "leaderboard.json",
        "leaderboard.csv",
        "leaderboard.md",
        "spec.yaml",
        "spec.json",
        "best_loss_curves.png",
        "steps_to_target_by_depth.png",
    } <= arts


def test_leaderboard_json_matches_mlflow(searched: dict[str, Any]) -> None:
    proc = actsweep(
        searched["tmp"],
        "leaderboard",
        "tiny",
        "--format",
        "json",
        "--tracking-uri",
        searched["uri"],
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    board = json.loads(proc.stdout)
    assert [r["activation"] for r in board] and len(board) == 2
    client = mlflow.MlflowClient(searched["uri"])
    for row in board:
        for key in (
            "rank",
            "activation",
            "steps_to_target",
            "reached",
            "depth",
            "init",
            "lr",
            "trials",
            "diverged_fraction",
            "run_id",
        ):
            assert key in row
        run = client.get_run(row["run_id"])
        assert run.data.params["activation"] == row["activation"]
        assert row["trials"] == 3
        if row["reached"]:
            assert row["steps_to_target"] == int(run.data.metrics["steps_to_target"])
        else:
            assert row["steps_to_target"] is None
        assert int(run.data.params["depth"]) == row["depth"]
        assert float(run.data.params["lr"]) == row["lr"]
    # the artifact written at the end of the search says the same
    parent = client.get_run(client.get_run(board[0]["run_id"]).data.tags["mlflow.parentRunId"])
    path = client.download_artifacts(parent.info.run_id, "leaderboard.json", str(searched["tmp"]))
    assert json.loads(Path(path).read_text()) == board


def test_optuna_studies_hold_every_trial_with_a_finite_value(searched: dict[str, Any]) -> None:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(
        JournalFileBackend(str(searched["tmp"] / ".actsweep" / "optuna.journal"))
    )
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
    assert len(names) == 2 and names[0].endswith(":relu") and names[1].endswith(":tanh")
    for name in names:
        study = optuna.load_study(study_name=name, storage=storage)
        states = [t.state for t in study.trials]
        assert states == [optuna.trial.TrialState.COMPLETE] * 3
        assert all(math.isfinite(t.value) for t in study.trials)


def test_rerun_of_a_finished_search_adds_nothing(searched: dict[str, Any]) -> None:
    proc = actsweep(
        searched["tmp"], "run", str(searched["spec"]), "--tracking-uri", searched["uri"]
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "already finished" in proc.stdout
    mlflow.set_tracking_uri(searched["uri"])
    roles = mlflow.search_runs(experiment_names=["tiny"])["tags.actsweep.role"]
    # one parent, six trials, one leaderboard summary run per activation
    assert roles.value_counts().to_dict() == {"trial": 6, "search": 1, "leaderboard": 2}


def test_diverging_learning_rate_is_recorded_and_the_search_completes(
    tmp_path: Path, base_spec: dict[str, Any]
) -> None:
    base_spec.update(name="diverge")
    base_spec["space"].update(
        activations=["relu"], optimizers=["sgd"], lr={"low": 40.0, "high": 60.0}
    )
    spec = write_spec(tmp_path / "d.yaml", base_spec)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = actsweep(tmp_path, "run", str(spec), "--tracking-uri", uri)
    assert proc.returncode == 0, proc.stderr[-3000:]
    mlflow.set_tracking_uri(uri)
    children = mlflow.search_runs(
        experiment_names=["diverge"], filter_string="tags.`actsweep.role` = 'trial'"
    )
    assert len(children) == 3 and set(children["status"]) == {"FINISHED"}
    assert (children["metrics.diverged"] == 1.0).all()
    assert (children["metrics.reached"] == 0.0).all()
    board = json.loads(
        actsweep(
            tmp_path, "leaderboard", "diverge", "--format", "json", "--tracking-uri", uri
        ).stdout
    )
    assert board[0]["reached"] is False and board[0]["steps_to_target"] is None
    assert board[0]["diverged_fraction"] == 1.0
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(tmp_path / ".actsweep" / "optuna.journal")))
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert all(
        math.isfinite(t.value) and t.value > 200 for t in study.trials
    )  # worse than max_steps
