"""Server mode end to end: a real `mlflow server` on a real PostgreSQL, searches over HTTP.

The services are started by this test session (tests/deploy/conftest.py); where PostgreSQL
is missing these tests skip, except under ACTSWEEP_REQUIRE_SERVICES=1 (CI), where they fail.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pytest
import requests
from mlflow.entities import ViewType
from PIL import Image

from search.leaderboard import COLUMNS
from search.summary import leaderboard_filter
from tests.deploy.conftest import Server, actsweep, start_server
from tests.deploy.flaky_proxy import FlakyProxy
from tests.search.conftest import BASE, write_spec

pytestmark = [pytest.mark.slow, pytest.mark.services]

ARTIFACTS = {
    "leaderboard.json",
    "leaderboard.csv",
    "leaderboard.md",
    "spec.yaml",
    "spec.json",
    "best_loss_curves.png",
    "steps_to_target_by_depth.png",
}

# What a script with nothing but MLflow runs (the README's query); it proves it imported
# no actsweep module, and prints the leaderboard rows as search_runs returns them.
PLAIN_QUERY = """
import json, sys, mlflow
mlflow.set_tracking_uri(sys.argv[1])
board = mlflow.search_runs(
    experiment_names=["tiny"],
    filter_string="tags.`actsweep.leaderboard` = '%s'" % sys.argv[2],
    order_by=["metrics.rank ASC"],
)
assert not any(m == "search" or m.startswith(("search.", "models", "deploy")) for m in sys.modules)
cols = [c for c in board.columns if c.startswith(("params.", "metrics."))]
rows = [{c: (None if v != v else v) for c, v in r.items()} for r in board[cols].to_dict("records")]
print(json.dumps(rows))  # repr-exact floats (DataFrame.to_json rounds to 10 digits)
"""


def _runs(server: Server, search_id: str) -> Any:
    mlflow.set_tracking_uri(server.url)
    return mlflow.search_runs(
        experiment_names=["tiny"], filter_string=f"tags.`actsweep.search_id` = '{search_id}'"
    )


def test_search_over_http_logs_parent_children_leaderboard_and_plots(
    mlflow_server: Server, served_search: dict[str, Any]
) -> None:
    proc = served_search["proc"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "View run" not in proc.stdout  # MLflow's per-run URL lines are suppressed
    runs = _runs(mlflow_server, served_search["search_id"])
    assert runs["tags.actsweep.role"].value_counts().to_dict() == {
        "trial": 6,
        "leaderboard": 2,
        "search": 1,
    }
    parent = runs[runs["tags.actsweep.role"] == "search"].iloc[0]
    children = runs[runs["tags.actsweep.role"] == "trial"]
    assert parent["status"] == "FINISHED" and parent["tags.actsweep.state"] == "finished"
    assert set(children["status"]) == {"FINISHED"} and children["tags.actsweep.trial_key"].is_unique
    assert set(children["tags.mlflow.parentRunId"]) == {parent["run_id"]}
    # the Optuna database is recorded without its password
    storage = parent["tags.actsweep.optuna_storage"]
    assert (
        storage.startswith("postgresql://actsweep:***@127.0.0.1:")
        and mlflow_server.pg.password not in storage
    )
    client = mlflow.MlflowClient(mlflow_server.url)
    # the leaderboard files and plots (the convergence map of the Science issue sits beside them)
    assert {a.path for a in client.list_artifacts(parent["run_id"])} >= ARTIFACTS
    # uploaded over HTTP into the server's artifact store, where the UI reads them
    on_disk = {p.name: p for p in mlflow_server.artifacts.rglob("*") if parent["run_id"] in str(p)}
    assert set(on_disk) >= ARTIFACTS
    for png in ("best_loss_curves.png", "steps_to_target_by_depth.png"):
        with Image.open(on_disk[png]) as image:
            assert image.format == "PNG" and image.width > 300
    curve = client.get_metric_history(children["run_id"].iloc[0], "train/loss")
    assert len(curve) >= 1 and all(math.isfinite(m.value) for m in curve)


def test_leaderboard_cli_and_plain_mlflow_query_agree_row_for_row(
    mlflow_server: Server, served_search: dict[str, Any]
) -> None:
    tmp, search_id = served_search["tmp"], served_search["search_id"]
    cli = actsweep(
        tmp, "leaderboard", "tiny", "--format", "json", "--tracking-uri", mlflow_server.url
    )
    assert cli.returncode == 0, cli.stderr[-2000:]
    board = json.loads(cli.stdout)
    plain = subprocess.run(
        [sys.executable, "-c", PLAIN_QUERY, mlflow_server.url, search_id],
        cwd=tmp,  # not the repository: actsweep is not importable by accident of the cwd
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert plain.returncode == 0, plain.stderr[-2000:]
    rows = json.loads(plain.stdout)
    assert len(rows) == len(board) == 2
    for row, rec in zip(rows, board, strict=True):
        for col in COLUMNS:
            text = col in ("activation", "init", "optimizer", "run_id")
            got = row.get(f"params.{col}" if text else f"metrics.{col}")
            want = rec[col]
            if want is None:
                assert got is None, col
            elif isinstance(want, bool):
                assert got == float(want), col
            else:
                assert got == want, (col, got, want)
        # the best run named by the row is a trial of this search with these numbers
        best = mlflow.MlflowClient(mlflow_server.url).get_run(rec["run_id"])
        assert best.data.tags["actsweep.search_id"] == search_id
        assert best.data.params["activation"] == rec["activation"]
        assert float(best.data.params["lr"]) == rec["lr"]


def test_optuna_studies_live_in_postgres_with_every_trial_and_value(
    mlflow_server: Server, served_search: dict[str, Any]
) -> None:
    from optuna_dashboard._storage_url import get_storage

    search_id = served_search["search_id"]
    children = _runs(mlflow_server, search_id)
    children = children[children["tags.actsweep.role"] == "trial"]
    # what `optuna-dashboard <url>` opens: the dashboard's own storage loader
    dashboard = get_storage(mlflow_server.optuna)
    names = {s.study_name for s in dashboard.get_all_studies()}
    assert {f"{search_id}:relu", f"{search_id}:tanh"} <= names
    for act in ("relu", "tanh"):
        study = optuna.load_study(study_name=f"{search_id}:{act}", storage=mlflow_server.optuna)
        assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
        mine = children[children["params.activation"] == act]
        score = {
            int(n): v
            for n, v in zip(mine["params.optuna_trial"], mine["metrics.score"], strict=True)
        }
        for t in study.trials:
            assert t.value is not None and math.isfinite(t.value)
            assert t.value == pytest.approx(score[t.number], rel=1e-12)


def test_lost_answers_are_retried_without_duplicate_runs_and_searches_do_not_mix(
    mlflow_server: Server, served_search: dict[str, Any], tmp_path: Path
) -> None:
    from search.spec import parse_spec

    data = {**BASE, "seed": 1, "space": {**BASE["space"], "activations": ["relu"]}}
    spec = write_spec(tmp_path / "second.yaml", data)
    second = parse_spec(data).search_id
    lose = {"/api/2.0/mlflow/runs/create": 3, "/api/2.0/mlflow/runs/log-batch": 2}
    with FlakyProxy(mlflow_server.url, lose) as proxy:
        proc = actsweep(
            tmp_path,
            "run",
            str(spec),
            "--tracking-uri",
            proxy.url,
            "--optuna-storage",
            mlflow_server.optuna,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proxy.lost.count("/api/2.0/mlflow/runs/create") == 3  # the faults did happen
    runs = _runs(mlflow_server, second)
    assert runs["tags.actsweep.role"].value_counts().to_dict() == {
        "trial": 3,
        "leaderboard": 1,
        "search": 1,
    }
    assert runs[runs["tags.actsweep.role"] == "trial"]["tags.actsweep.trial_key"].is_unique
    # the twins the retries made on the server were deleted, not left beside the real runs
    client = mlflow.MlflowClient(mlflow_server.url)
    exp = client.get_experiment_by_name("tiny").experiment_id
    deleted = client.search_runs(
        [exp], f"tags.`actsweep.search_id` = '{second}'", ViewType.DELETED_ONLY
    )
    assert len(deleted) == 3
    # each search's leaderboard holds its own rows only
    first = served_search["search_id"]
    one = mlflow.search_runs(experiment_ids=[exp], filter_string=leaderboard_filter(first))
    two = mlflow.search_runs(experiment_ids=[exp], filter_string=leaderboard_filter(second))
    assert sorted(one["params.activation"]) == ["relu", "tanh"] and list(
        two["params.activation"]
    ) == ["relu"]
    firsts = set(_runs(mlflow_server, first)["run_id"])
    assert set(one["params.run_id"]) <= firsts and not set(two["params.run_id"]) & firsts
    latest = actsweep(
        tmp_path, "leaderboard", "tiny", "--format", "json", "--tracking-uri", mlflow_server.url
    )
    assert [r["run_id"] for r in json.loads(latest.stdout)] == list(two["params.run_id"])


def test_foreign_host_headers_and_origins_are_refused(mlflow_server: Server) -> None:
    api = f"{mlflow_server.url}/api/2.0/mlflow/experiments/search"
    port = mlflow_server.url.rsplit(":", 1)[1]
    ok = requests.get(api, params={"max_results": 1}, timeout=30)
    assert ok.status_code == 200
    for host in ("evil.example.com", f"evil.example.com:{port}", "203.0.113.7"):
        refused = requests.get(api, params={"max_results": 1}, headers={"Host": host}, timeout=30)
        assert refused.status_code == 403, host
        assert "Invalid Host header" in refused.text
    # a page on another site may not make the browser change anything here (CORS)
    create = f"{mlflow_server.url}/api/2.0/mlflow/experiments/create"
    blocked = requests.post(
        create,
        json={"name": "from-evil"},
        headers={"Origin": "https://evil.example.com"},
        timeout=30,
    )
    assert blocked.status_code == 403
    assert mlflow.MlflowClient(mlflow_server.url).get_experiment_by_name("from-evil") is None


def test_server_process_runs_without_pickle_and_without_the_password_in_argv(
    mlflow_server: Server,
) -> None:
    environ = Path(f"/proc/{mlflow_server.proc.pid}/environ").read_bytes().split(b"\0")
    assert b"MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false" in environ
    argv = Path(f"/proc/{mlflow_server.proc.pid}/cmdline").read_bytes().decode()
    assert mlflow_server.pg.password not in argv and "127.0.0.1" in argv


def test_basic_auth_switch(
    mlflow_server: Server, served_search: dict[str, Any], tmp_path: Path
) -> None:
    import os

    from deploy import server as srv

    env = {
        **os.environ,
        "MLFLOW_AUTH_ADMIN_PASSWORD": "correct-horse-battery-staple",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret-key",
    }
    # A second server with --auth on the same database, as a team would switch auth on:
    # its users live in that database beside the runs (and the runs are already there).
    cfg, proc, _ = start_server(mlflow_server.db, tmp_path, env=env, auth=True)
    try:
        api = f"{cfg.url}/api/2.0/mlflow/experiments/search"
        assert requests.get(api, params={"max_results": 1}, timeout=60).status_code == 401
        assert requests.get(f"{cfg.url}/health", timeout=60).status_code == 200
        creds = ("admin", "correct-horse-battery-staple")
        wrong = requests.get(api, params={"max_results": 1}, auth=(creds[0], "nope"), timeout=60)
        assert wrong.status_code == 401
        assert (
            requests.get(api, params={"max_results": 1}, auth=creds, timeout=60).status_code == 200
        )
        search = ["--search", served_search["search_id"], "--format", "json"]
        denied = actsweep(tmp_path, "leaderboard", "tiny", *search, "--tracking-uri", cfg.url)
        assert denied.returncode == 2 and denied.stderr.count("\n") == 1
        assert "wants credentials: set MLFLOW_TRACKING_USERNAME" in denied.stderr
        user = {"MLFLOW_TRACKING_USERNAME": creds[0], "MLFLOW_TRACKING_PASSWORD": creds[1]}
        allowed = actsweep(
            tmp_path, "leaderboard", "tiny", *search, "--tracking-uri", cfg.url, env=user
        )
        assert allowed.returncode == 0, allowed.stderr[-2000:]
        from search.leaderboard import render
        from search.results import load_leaderboard

        same = load_leaderboard(
            "tiny", tracking_uri=mlflow_server.url, search_id=served_search["search_id"]
        )
        assert json.loads(allowed.stdout) == json.loads(render(same, "json"))
    finally:
        srv.stop(proc)
