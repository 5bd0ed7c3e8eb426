"""A tracking server that is down, silent or refusing: one line naming the URI, exit 2.

No MLflow server is needed: a closed port is what a stopped server looks like, a socket that
never answers is a hung one, and a stub answers 401/403 like a server with auth or a Host
check would.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from search.errors import SpecError
from search.remote import CLIENT_DEFAULTS, bound_client_retries, check_server, uri_field
from tests.search.conftest import write_spec

REPO = Path(__file__).resolve().parents[2]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again on exit: nothing listens there


@pytest.fixture
def silent_port() -> Iterator[int]:
    """Accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield int(s.getsockname()[1])


class _Stub(BaseHTTPRequestHandler):
    status = 200
    body = b"{}"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(self.status)
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[tuple[str, type[_Stub]]]:
    handler = type("Handler", (_Stub,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_stopped_server_is_one_line_naming_the_uri() -> None:
    uri = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(SpecError) as info:
        check_server(uri, "--tracking-uri")
    line = info.value.one_line()
    assert line.startswith("--tracking-uri: cannot connect to the MLflow tracking server at ")
    assert uri in line and "\n" not in line


def test_silent_server_times_out(silent_port: int) -> None:
    uri = f"http://127.0.0.1:{silent_port}"
    with pytest.raises(SpecError) as info:
        check_server(uri, "tracking.uri", timeout=0.5)
    assert f"tracking.uri: the MLflow tracking server at {uri} did not answer within 0.5 s" == (
        info.value.one_line()
    )


def test_auth_and_host_refusals_say_what_to_do(
    stub: tuple[str, type[_Stub]], monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, handler = stub
    check_server(uri)  # 200: fine
    handler.status = 401
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    with pytest.raises(SpecError, match="wants credentials: set MLFLOW_TRACKING_USERNAME"):
        check_server(uri)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "u")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
    with pytest.raises(SpecError, match="rejected the credentials"):
        check_server(uri)
    handler.status, handler.body = 403, b"Invalid Host header - possible DNS rebinding attack"
    with pytest.raises(SpecError, match="refused the Host header .*--allowed-hosts"):
        check_server(uri)
    handler.status = 500
    with pytest.raises(SpecError, match="answered HTTP 500"):
        check_server(uri)


def test_client_retries_are_bounded_unless_the_user_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CLIENT_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "9")
    applied = bound_client_retries()
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "9"  # the user's choice stays
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in applied
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "30"
    assert os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "1"


def test_uri_field_names_where_the_uri_came_from() -> None:
    assert uri_field("http://x", "http://y") == "--tracking-uri"
    assert uri_field(None, "http://y") == "tracking.uri"
    assert uri_field(None, None) == "MLFLOW_TRACKING_URI"


@pytest.mark.parametrize("command", ["run", "leaderboard"])
def test_cli_against_a_stopped_server_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path, base_spec: dict[str, Any], command: str
) -> None:
    uri = f"http://127.0.0.1:{_closed_port()}"
    spec = write_spec(tmp_path / "s.yaml", base_spec)
    target = str(spec) if command == "run" else "tiny"
    env = {**os.environ, "HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)}
    env.pop("ACTSWEEP_HOME", None)
    # The timeout only guards the test against a hang: the check itself takes one attempt.
    proc = subprocess.run(
        [sys.executable, "-m", "search.cli", command, target, "--tracking-uri", uri],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("actsweep: error: --tracking-uri: cannot connect")
    assert uri in proc.stderr
    assert not (tmp_path / "home" / ".actsweep").exists() and not (tmp_path / "mlflow.db").exists()


def test_experiment_view_points_at_the_runs_table(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from search.remote import experiment_view

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(SpecError, match="no MLflow store at"):
        experiment_view("http://127.0.0.1:5000", uri, "tiny")
    assert not (tmp_path / "mlflow.db").exists()  # looking did not create a store
    exp = MlflowClient(uri).create_experiment("tiny", artifact_location=(tmp_path / "a").as_uri())
    assert experiment_view("http://127.0.0.1:5000/", uri, "tiny") == (
        f"http://127.0.0.1:5000/#/experiments/{exp}/runs?workflowType=machine_learning"
    )
    assert experiment_view("http://127.0.0.1:5000", uri, None) == "http://127.0.0.1:5000"
    with pytest.raises(SpecError, match="no experiment named 'ghost'"):
        experiment_view("http://127.0.0.1:5000", uri, "ghost")
