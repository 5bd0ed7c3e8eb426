"""Issue #7, item 5: the MLflow tracking server goes away mid-search.

A real `mlflow server` on a real PostgreSQL (tests/deploy), reached through a proxy that
is switched off to stop it and on to restart it. The search runs as the real CLI with the
oracle trainable. A 30 s outage (ACTSWEEP_OUTAGE_S; never less than 30 by default) is ridden
out: the search ends normally and every measurement is in MLflow. An outage that outlasts
the retry window leaves the results in the private spool, says so, exits 3 without a
traceback, and `actsweep sync` uploads them once the server is back.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from deploy import server as srv
from search.spec import parse_spec
from tests.deploy.conftest import start_server
from tests.deploy.services import postgres
from tests.faults.driver import driver_tracebacks, run, start, wait_for
from tests.faults.oracle import check_nothing_lost, read_oracle
from tests.faults.switch_proxy import SwitchProxy
from tests.search.conftest import write_spec

pytestmark = [pytest.mark.slow, pytest.mark.services]

OUTAGE_S = float(os.environ.get("ACTSWEEP_OUTAGE_S", "30"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a private `mlflow server` on a private PostgreSQL (skips where missing,
    fails under ACTSWEEP_REQUIRE_SERVICES=1: tests/deploy/services.py)."""
    with postgres() as pg:
        root = tmp_path_factory.mktemp("outage-server")
        cfg, proc, _ = start_server(pg.create_database("mlflow"), root)
        try:
            yield cfg.url
        finally:
            srv.stop(proc)


def _child_runs(url: str, experiment: str, search_id: str) -> int:
    client = MlflowClient(url)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return 0
    return len(
        client.search_runs(
            [exp.experiment_id],
            f"tags.`actsweep.search_id` = '{search_id}' and tags.`actsweep.role` = 'trial'",
        )
    )


def _finished_trials(url: str, experiment: str, search_id: str) -> set[tuple[str, int]]:
    client = MlflowClient(url)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return set()
    runs = client.search_runs(
        [exp.experiment_id],
        f"tags.`actsweep.search_id` = '{search_id}' and tags.`actsweep.role` = 'trial'",
    )
    return {
        (r.data.tags["activation"], int(r.data.params["optuna_trial"]))
        for r in runs
        if r.info.status == "FINISHED"
    }


def _spec(tmp: Path, tiny: dict[str, Any], name: str) -> tuple[Any, Path]:
    tiny["name"] = name
    tiny["budget"] = {"trials_per_activation": 4, "cohort_size": 2}
    return parse_spec(tiny), write_spec(tmp / "spec.yaml", tiny)


def _first_measurement(proc: Any, oracle: Path, err: Path) -> Any:
    def probe() -> bool | None:
        assert proc.poll() is None, err.read_text()[-3000:]
        return True if oracle.exists() and oracle.stat().st_size else None

    return wait_for(probe, "the first measured trial")


def _check(server: str, spec: Any, tmp: Path, oracle: Path) -> dict[str, int]:
    return check_nothing_lost(
        oracle,
        spec,
        tracking_uri=server,
        optuna_storage=str(tmp / "home" / ".actsweep" / "optuna.journal"),
    )


def test_server_stopped_for_thirty_seconds_mid_search_loses_nothing(
    server: str, tmp_path: Path, tiny_spec: dict[str, Any]
) -> None:
    spec, path = _spec(tmp_path, tiny_spec, "outage")
    oracle = tmp_path / "oracle.jsonl"
    with SwitchProxy(server) as proxy:
        proc = start(tmp_path, oracle, "run", str(path), "--tracking-uri", proxy.url)
        _first_measurement(proc, oracle, tmp_path / "driver-0.err")
        proxy.down()
        cut = time.monotonic()
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - cut)))  # the outage itself
        # The search went on while MLflow was away: more was measured than logged.
        measured = len(read_oracle(oracle))
        logged = _child_runs(server, spec.experiment_name, spec.search_id)
        proxy.up()
        code = proc.wait(600)
    err = (tmp_path / "driver-0.err").read_text()
    assert code == 0, err[-3000:]
    assert not driver_tracebacks(err), err[-3000:]
    assert measured > logged, (measured, logged)
    counts = _check(server, spec, tmp_path, oracle)
    assert counts["child_runs"] == counts["optuna_complete"] == 8
    spool = tmp_path / "home" / ".actsweep" / "spool" / spec.search_id
    assert not list(spool.glob("*.json"))


def test_outage_beyond_the_retry_window_spools_and_sync_uploads(
    server: str, tmp_path: Path, tiny_spec: dict[str, Any]
) -> None:
    from search.spool import Spool

    spec, path = _spec(tmp_path, tiny_spec, "long-outage")
    oracle = tmp_path / "oracle.jsonl"
    # Short client retries and retry window: the outage below outlasts them by far.
    env = {
        "ACTSWEEP_MLFLOW_RETRY_WINDOW_S": "2",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    }
    with SwitchProxy(server) as proxy:
        proc = start(tmp_path, oracle, "run", str(path), "--tracking-uri", proxy.url, env=env)
        _first_measurement(proc, oracle, tmp_path / "driver-0.err")
        proxy.down()  # for the rest of the search
        code = proc.wait(600)
        out = (tmp_path / "driver-0.out").read_text()
        err = (tmp_path / "driver-0.err").read_text()
        assert code == 3, err[-3000:]
        assert not driver_tracebacks(err), err[-3000:]
        # the user is told: how many, where, and what to run
        home = tmp_path / "home" / ".actsweep"
        spool = Spool(home / "spool" / spec.search_id)
        spooled = {
            (m.params.activation, m.params.number) for o in spool.entries() for m in o.members
        }
        finished = _finished_trials(server, spec.experiment_name, spec.search_id)
        missing = spooled - finished
        assert missing
        assert f"{len(missing)} trials of search {spec.search_id} are not in MLflow yet" in err
        assert str(spool.path) in err and f"actsweep sync {path}" in err
        assert "leaderboard of" not in out
        # private: the state directory, the spool and every entry
        for d in (home, home / "spool", spool.path):
            assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
        for f in spool.files():
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        # every trial is somewhere: FINISHED in MLflow, or in the spool
        assert len(spooled | finished) == 8
        client = MlflowClient(server)
        exp = client.get_experiment_by_name(spec.experiment_name)
        assert exp is not None
        parent = client.search_runs([exp.experiment_id], "tags.`actsweep.role` = 'search'")
        assert [p.info.status for p in parent] != ["FINISHED"]

        proxy.up()  # the server is back
        code, out, err = run(tmp_path, oracle, "sync", str(path), "--tracking-uri", proxy.url)
    assert code == 0, err[-3000:]
    assert f"{len(missing)} trials uploaded" in out and "leaderboard of" in out
    counts = _check(server, spec, tmp_path, oracle)  # the parent is FINISHED too
    assert counts["child_runs"] == counts["optuna_complete"] == 8
    assert not spool.files()
