"""Session-wide services for the server-mode tests: one PostgreSQL, one `mlflow server`
started through deploy.server exactly as `actsweep server` starts it, and one tiny search
run against it with the real `actsweep` CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from deploy import server as srv
from tests.deploy.services import Postgres, free_port, postgres
from tests.search.conftest import BASE, write_spec

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Server:
    url: str
    pg: Postgres
    db: str
    optuna: str
    """A second database of the same PostgreSQL, for the Optuna studies."""
    artifacts: Path
    proc: subprocess.Popen[bytes]
    log: Path


def actsweep(
    cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess, with a private HOME (Ray's token, ~/.actsweep)."""
    (cwd / "home").mkdir(exist_ok=True)
    base = dict(os.environ)
    base.update(HOME=str(cwd / "home"), PYTHONPATH=str(REPO))
    for name in (
        "MLFLOW_TRACKING_URI",
        "ACTSWEEP_HOME",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
    ):
        base.pop(name, None)
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "search.cli", *args],
        cwd=cwd,
        env=base,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def pg() -> Iterator[Postgres]:
    with postgres() as instance:
        yield instance


def start_server(
    db: str, root: Path, env: dict[str, str] | None = None, **kw: Any
) -> tuple[srv.ServerConfig, subprocess.Popen[bytes], Path]:
    """Start `mlflow server` on database `db` and wait until it answers."""
    cfg = srv.ServerConfig(
        backend_store_uri=db,
        artifacts_destination=str(root / "artifacts"),
        port=free_port(),
        state_dir=root / "state",
        workers=1,
        **kw,
    )
    log = root / "server.log"
    with log.open("wb") as out:
        proc = srv.start(cfg, out, base_env=env)
    try:
        srv.wait_ready(cfg.url, proc, timeout=300)
    except RuntimeError as err:
        srv.stop(proc)
        raise RuntimeError(f"{err}: {log.read_text()[-3000:]}") from err
    return cfg, proc, log


@pytest.fixture(scope="session")
def mlflow_server(pg: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("server")
    cfg, proc, log = start_server(pg.create_database("mlflow"), root)
    try:
        yield Server(
            cfg.url,
            pg,
            cfg.backend_store_uri,
            pg.create_database("optuna"),
            root / "artifacts",
            proc,
            log,
        )
    finally:
        srv.stop(proc)


@pytest.fixture(scope="session")
def served_search(
    mlflow_server: Server, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The tiny search of tests/search (relu and tanh, 3 trials each) over HTTP."""
    from search.spec import parse_spec

    tmp = tmp_path_factory.mktemp("served")
    spec = write_spec(tmp / "tiny.yaml", BASE)
    proc = actsweep(
        tmp,
        "run",
        str(spec),
        "--tracking-uri",
        mlflow_server.url,
        "--optuna-storage",
        mlflow_server.optuna,
    )
    return {"tmp": tmp, "spec": spec, "proc": proc, "search_id": parse_spec(BASE).search_id}
