"""`actsweep submit` without a cluster: ids, dedup, paths, token lookup and the auth handshake.

The handshake runs against a tiny HTTP server on loopback that answers like the Ray
dashboard's auth middleware (401 without a token, 403 with a wrong one); the job
submission logic runs against a fake client. The real cluster is in test_multinode.py.
"""

from __future__ import annotations

import io
import json
import shlex
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from deploy.client import Token, find_token, is_loopback, probe, resolve_address
from deploy.jobs import exit_code
from deploy.submit import (
    SPEC_FILE,
    Decision,
    attempt_of,
    cluster_optuna_storage,
    cluster_tracking_uri,
    decide,
    entrypoint,
    job_metadata,
    stage,
    submission_id,
    submit_search,
)
from search.errors import SpecError
from search.spec import parse_spec

TOKEN = "f" * 64


# --- submission ids and dedup ---------------------------------------------------------------


def test_submission_id_derives_from_the_search_id() -> None:
    assert submission_id("tiny-0123456789") == "actsweep-tiny-0123456789"
    assert submission_id("tiny-0123456789", 3) == "actsweep-tiny-0123456789-r3"
    assert attempt_of("actsweep-tiny-0123456789-r3", "tiny-0123456789") == 3
    assert attempt_of("actsweep-tiny-0123456789", "tiny-0123456789") == 1
    for other in ("actsweep-tiny-01234567890", "actsweep-tiny-0123456789-r1", "raysubmit_x"):
        assert attempt_of(other, "tiny-0123456789") is None


@pytest.mark.parametrize(
    ("jobs", "expected"),
    [
        ({}, Decision("submit", "actsweep-s-1")),
        ({"raysubmit_abc": "RUNNING"}, Decision("submit", "actsweep-s-1")),
        ({"actsweep-s-1": "RUNNING"}, Decision("exists", "actsweep-s-1", status="RUNNING")),
        ({"actsweep-s-1": "PENDING"}, Decision("exists", "actsweep-s-1", status="PENDING")),
        ({"actsweep-s-1": "SUCCEEDED"}, Decision("exists", "actsweep-s-1", status="SUCCEEDED")),
        (
            {"actsweep-s-1": "FAILED"},
            Decision("submit", "actsweep-s-1-r2", previous="actsweep-s-1"),
        ),
        (
            {"actsweep-s-1": "FAILED", "actsweep-s-1-r2": "STOPPED"},
            Decision("submit", "actsweep-s-1-r3", previous="actsweep-s-1-r2"),
        ),
        (
            {"actsweep-s-1": "FAILED", "actsweep-s-1-r2": "RUNNING"},
            Decision("exists", "actsweep-s-1-r2", status="RUNNING"),
        ),
    ],
)
def test_decide_submits_once_and_retries_only_after_failure(
    jobs: dict[str, str], expected: Decision
) -> None:
    assert decide("s-1", jobs) == expected


@dataclass
class FakeJob:
    submission_id: str
    status: str
    metadata: dict[str, str] = field(default_factory=dict)
    start_time: int = 0
    message: str = ""
    job_id: str = ""


class FakeClient:
    """Just enough of JobSubmissionClient: records submissions, can lose a race."""

    def __init__(self, jobs: list[FakeJob], lose_race: bool = False) -> None:
        self.jobs = jobs
        self.lose_race = lose_race
        self.submitted: list[dict[str, Any]] = []

    def list_jobs(self) -> list[FakeJob]:
        return list(self.jobs)

    def get_job_status(self, job_id: str) -> str:
        return next(j.status for j in self.jobs if j.submission_id == job_id)

    def submit_job(self, **kwargs: Any) -> str:
        wd = Path(kwargs["runtime_env"]["working_dir"])
        kwargs["shipped"] = sorted(str(p.relative_to(wd)) for p in wd.rglob("*") if p.is_file())
        kwargs["spec_text"] = (wd / SPEC_FILE).read_text()
        self.submitted.append(kwargs)
        if self.lose_race:
            self.jobs.append(FakeJob(kwargs["submission_id"], "RUNNING"))
            raise RuntimeError(
                "Request failed with status code 500: ValueError: Job with submission_id "
                f"{kwargs['submission_id']} already exists. Please use a different submission_id."
            )
        return str(kwargs["submission_id"])


SPEC_TEXT = """name: tiny
dataset: digits
space: {activations: [relu]}
tracking: {uri: http://user:secret@mlflow:5000}
"""


def _submit(client: FakeClient) -> tuple[int, str]:
    import yaml

    spec = parse_spec(yaml.safe_load(SPEC_TEXT))
    out = io.StringIO()
    code = submit_search(
        client,  # type: ignore[arg-type]
        "http://127.0.0.1:8265",
        spec,
        SPEC_TEXT,
        tracking_uri="http://user:secret@mlflow:5000",
        optuna_storage="/shared/optuna.journal",
        wait=False,
        out=out,
    )
    return code, out.getvalue()


def test_submit_ships_code_and_spec_and_keeps_secrets_out_of_the_record() -> None:
    client = FakeClient([])
    code, out = _submit(client)
    assert code == 0
    (sent,) = client.submitted
    assert sent["submission_id"].startswith("actsweep-tiny-")
    assert sent["spec_text"] == SPEC_TEXT  # exactly as written
    shipped = sent["shipped"]
    assert SPEC_FILE in shipped
    for module in ("search/cli.py", "search/orchestrate.py", "models/train.py", "deploy/submit.py"):
        assert module in shipped
    assert not [p for p in shipped if "__pycache__" in p or p.endswith(".pyc")]
    assert "env_vars" not in sent["runtime_env"]
    assert sent["metadata"]["actsweep.tracking_uri"] == "http://user:***@mlflow:5000"
    assert sent["entrypoint_num_cpus"] == 0
    assert (
        "secret" not in out and f"submitted search {sent['metadata']['actsweep.search_id']}" in out
    )


def test_second_submit_reports_the_running_job() -> None:
    first = FakeClient([])
    _submit(first)
    job_id = first.submitted[0]["submission_id"]
    client = FakeClient([FakeJob(job_id, "RUNNING")])
    code, out = _submit(client)
    assert code == 0 and client.submitted == []
    assert f"Ray job {job_id} is RUNNING (not started again)" in out


def test_lost_race_is_reported_as_already_submitted() -> None:
    client = FakeClient([], lose_race=True)
    code, out = _submit(client)
    assert code == 0 and len(client.submitted) == 1
    assert "already submitted" in out and "is RUNNING" in out


def test_failed_attempt_is_followed_by_a_resuming_one() -> None:
    first = FakeClient([])
    _submit(first)
    job_id = first.submitted[0]["submission_id"]
    client = FakeClient([FakeJob(job_id, "FAILED")])
    _, out = _submit(client)
    assert client.submitted[0]["submission_id"] == f"{job_id}-r2"
    assert f"attempt after {job_id}, resumes it" in out


@pytest.mark.parametrize(
    ("status", "driver_code", "expected"),
    [
        ("SUCCEEDED", 0, 0),
        ("FAILED", 2, 2),
        ("FAILED", None, 1),
        ("FAILED", -9, 1),
        ("STOPPED", None, 1),
    ],
)
def test_exit_code_reports_the_job_outcome(
    status: str, driver_code: int | None, expected: int
) -> None:
    assert exit_code(status, driver_code) == expected


# --- where the job tracks ------------------------------------------------------------------


def test_tracking_uri_must_be_reachable_from_the_cluster() -> None:
    with pytest.raises(SpecError, match="needs a tracking store the cluster reaches"):
        cluster_tracking_uri(None, None, env={})
    with pytest.raises(SpecError, match="relative path"):
        cluster_tracking_uri("sqlite:///mlflow.db", None, env={})
    with pytest.raises(SpecError, match="unsupported tracking URI"):
        cluster_tracking_uri("ftp://x", None, env={})
    assert cluster_tracking_uri("sqlite:////shared/m.db", None, env={}) == "sqlite:////shared/m.db"
    assert cluster_tracking_uri(None, "http://mlflow:5000", env={}) == "http://mlflow:5000"
    env = {"MLFLOW_TRACKING_URI": "http://from-env:5000"}
    assert cluster_tracking_uri(None, None, env=env) == "http://from-env:5000"


def test_optuna_storage_must_survive_the_driver() -> None:
    assert cluster_optuna_storage(None, None) is None
    assert cluster_optuna_storage("/shared/o.journal", None) == "/shared/o.journal"
    assert cluster_optuna_storage(None, "postgresql://u:p@db/o") == "postgresql://u:p@db/o"
    with pytest.raises(SpecError, match="relative"):
        cluster_optuna_storage("state/o.journal", None)
    with pytest.raises(SpecError, match="unsupported Optuna storage") as info:
        cluster_optuna_storage("sqlite://u:pw@x/o.db", None)
    assert "pw" not in str(info.value)


def test_entrypoint_is_the_run_command_and_survives_odd_paths() -> None:
    cmd = entrypoint("sqlite:////data/my runs/m.db", "/data/o; rm -rf ~.journal")
    assert shlex.split(cmd) == [
        "python",
        "-m",
        "search.cli",
        "run",
        SPEC_FILE,
        "--tracking-uri",
        "sqlite:////data/my runs/m.db",
        "--optuna-storage",
        "/data/o; rm -rf ~.journal",
    ]
    assert "--optuna-storage" not in entrypoint("http://m:5000", None)


def test_stage_lays_out_packages_and_spec(tmp_path: Path) -> None:
    out = stage("name: x\n", tmp_path)
    assert (out / SPEC_FILE).read_text() == "name: x\n"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["deploy", "models", "search", SPEC_FILE]
    )
    assert not list(out.rglob("__pycache__"))


def test_job_metadata_names_the_search() -> None:
    import yaml

    spec = parse_spec(yaml.safe_load(SPEC_TEXT))
    meta = job_metadata(spec, "postgresql://u:pw@db/m")
    assert meta["actsweep.search_id"] == spec.search_id
    assert meta["actsweep.experiment"] == "tiny"
    assert "pw" not in json.dumps(meta)


# --- the token and the address ---------------------------------------------------------------


def test_token_lookup_follows_rays_precedence(tmp_path: Path) -> None:
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-home\n")
    named = tmp_path / "named"
    named.write_text("  from-path\n")
    assert find_token({}, home=tmp_path) == Token("from-home", str(tmp_path / ".ray/auth_token"))
    env = {"RAY_AUTH_TOKEN_PATH": str(named)}
    assert find_token(env, home=tmp_path).value == "from-path"  # type: ignore[union-attr]
    env["RAY_AUTH_TOKEN"] = "from-env"
    token = find_token(env, home=tmp_path)
    assert token is not None and (token.value, token.source) == ("from-env", "RAY_AUTH_TOKEN")
    assert "from-env" not in repr(token)
    assert find_token({}, home=tmp_path / "nobody") is None
    with pytest.raises(SpecError, match="RAY_AUTH_TOKEN_PATH: cannot read"):
        find_token({"RAY_AUTH_TOKEN_PATH": str(tmp_path / "missing")}, home=tmp_path)


def test_address_is_the_jobs_api_url() -> None:
    assert resolve_address("http://127.0.0.1:8265/", {}) == "http://127.0.0.1:8265"
    assert resolve_address(None, {"RAY_API_SERVER_ADDRESS": "http://h:1"}) == "http://h:1"
    assert resolve_address(None, {"RAY_ADDRESS": "https://h:2"}) == "https://h:2"
    for bad in ("ray://h:10001", "auto", "127.0.0.1:6379", "http://u:p@h:8265", "http://h:x"):
        with pytest.raises(SpecError, match="--address"):
            resolve_address(bad, {})
    with pytest.raises(SpecError, match="--address: missing"):
        resolve_address(None, {"RAY_ADDRESS": "127.0.0.1:6379"})  # a GCS address is not the API
    assert is_loopback("http://127.0.0.1:8265") and is_loopback("http://localhost:1")
    assert not is_loopback("http://10.0.0.5:8265")


class FakeDashboard(BaseHTTPRequestHandler):
    """Answers like Ray's token middleware in front of /api/version."""

    mode = "token"
    seen: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/api/authentication_mode":
            self._answer(200, {"authentication_mode": self.mode})
            return
        header = self.headers.get("Authorization")
        FakeDashboard.seen.append(header)
        if self.mode == "token" and header is None:
            self._answer(401, {})
        elif self.mode == "token" and header != f"Bearer {TOKEN}":
            self._answer(403, {})
        else:
            self._answer(200, {"ray_version": "2.60.0"})

    def _answer(self, status: int, body: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def dashboard() -> Iterator[str]:
    FakeDashboard.mode = "token"
    FakeDashboard.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeDashboard)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_probe_sends_the_token_as_a_bearer_header(dashboard: str) -> None:
    probe(dashboard, Token(TOKEN, "RAY_AUTH_TOKEN"))
    assert FakeDashboard.seen == [f"Bearer {TOKEN}"]


def test_probe_without_a_token_says_how_to_give_one(dashboard: str) -> None:
    with pytest.raises(SpecError) as info:
        probe(dashboard, None)
    msg = info.value.one_line()
    assert msg.startswith("auth token: ") and "(HTTP 401)" in msg
    assert "RAY_AUTH_TOKEN_PATH" in msg and "~/.ray/auth_token" in msg


def test_probe_with_a_wrong_token_names_its_source_not_its_value(dashboard: str) -> None:
    with pytest.raises(SpecError) as info:
        probe(dashboard, Token("wrong-value", "RAY_AUTH_TOKEN_PATH (/x)"))
    msg = info.value.one_line()
    assert "(HTTP 403)" in msg and "RAY_AUTH_TOKEN_PATH (/x)" in msg and "wrong-value" not in msg


def test_probe_refuses_a_cluster_without_authentication(dashboard: str) -> None:
    FakeDashboard.mode = "disabled"
    with pytest.raises(SpecError, match="accepts jobs without authentication"):
        probe(dashboard, None)
    probe(dashboard, None, allow_unauthenticated=True)  # an explicit, visible opt-out


def test_probe_of_nothing_listening_is_one_line() -> None:
    from tests.deploy.loopback import free_port

    with pytest.raises(SpecError, match="cannot reach the Ray Jobs API"):
        probe(f"http://127.0.0.1:{free_port()}", None)
