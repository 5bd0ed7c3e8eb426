"""Talking to a remote MLflow tracking server: a pre-flight check and bounded retries.

MLflow's HTTP client retries every request (POST included) for minutes by default, so an
unreachable server looks like a hang. Before anything is created we ask the server once,
with a short timeout and no retries, and turn a failure into a one-line SpecError naming
the URI; for the rest of the command the client's retries are bounded (unless the user set
them), long enough to ride out a server restart, short enough to fail rather than hang.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from search.errors import SpecError

# Sleeps between tries are 0, 2, 4, 8, 16 s with factor 1 (urllib3): about half a minute
# of a server being away is survived; a request waits at most 30 s for an answer.
CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    # Against a server the client prints two "View run" lines per run it ends; our own
    # progress and leaderboard are the console output.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
PREFLIGHT_TIMEOUT_S = 15.0


def is_remote(uri: str) -> bool:
    return urlsplit(uri).scheme in ("http", "https")


def uri_field(cli: str | None, spec_uri: str | None = None) -> str:
    """Which input the tracking URI came from, for error messages."""
    if cli:
        return "--tracking-uri"
    if spec_uri:
        return "tracking.uri"
    return "MLFLOW_TRACKING_URI"


def bound_client_retries() -> dict[str, str]:
    """Bound MLflow's HTTP retries in this process where the user has not; return what was set."""
    applied = {}
    for name, value in CLIENT_DEFAULTS.items():
        if not os.environ.get(name):
            os.environ[name] = value
            applied[name] = value
    return applied


def _auth() -> tuple[str, str] | None:
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    return (user, password) if user and password is not None else None


def _headers() -> dict[str, str]:
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def check_server(
    uri: str, field: str = "--tracking-uri", timeout: float = PREFLIGHT_TIMEOUT_S
) -> None:
    """Raise SpecError (one line, naming `uri`) unless the server answers an API call."""
    import requests

    if not is_remote(uri):
        return
    base = uri.rstrip("/")
    verify: bool | str = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or (
        os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() != "true"
    )
    try:
        # A plain session: no retries, no proxy surprises beyond the environment's own.
        resp = requests.get(
            f"{base}/api/2.0/mlflow/experiments/search",
            params={"max_results": 1},
            auth=_auth(),
            headers=_headers(),
            timeout=timeout,
            verify=verify,
        )
    except requests.exceptions.Timeout:
        raise SpecError(
            field, f"the MLflow tracking server at {uri} did not answer within {timeout:g} s"
        ) from None
    except requests.exceptions.SSLError:
        raise SpecError(
            field,
            f"TLS handshake with {uri} failed (for a private CA set MLFLOW_TRACKING_SERVER_CERT_PATH)",
        ) from None
    except requests.exceptions.RequestException:
        raise SpecError(
            field, f"cannot connect to the MLflow tracking server at {uri}; is it running?"
        ) from None
    if resp.status_code == 200:
        return
    if resp.status_code == 401:
        said = (
            "rejected the credentials in MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD"
            if _auth()
            else "wants credentials: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
        )
        raise SpecError(field, f"the MLflow tracking server at {uri} {said}")
    if resp.status_code == 403 and "host" in resp.text.lower():
        host = urlsplit(uri).netloc
        raise SpecError(
            field,
            f"the MLflow tracking server at {uri} refused the Host header {host!r}: "
            "add it to the server's --allowed-hosts",
        )
    raise SpecError(field, f"the MLflow tracking server at {uri} answered HTTP {resp.status_code}")


def prepare_remote(uri: str, field: str) -> None:
    """What every command does before touching a remote store: check it, bound retries."""
    if is_remote(uri):
        check_server(uri, field)
        bound_client_retries()


def experiment_view(ui_base: str, tracking_uri: str, experiment: str | None) -> str:
    """The UI address of an experiment's runs table (or the UI's front page).

    `workflowType=machine_learning`: MLflow 3's UI opens experiments on its GenAI pages
    unless told otherwise; our runs live on the "Model training" side.
    """
    base = ui_base.rstrip("/")
    if experiment is None:
        return base
    from mlflow.tracking import MlflowClient

    from search.paths import sqlite_path

    db = sqlite_path(tracking_uri)
    if db is not None and not db.exists():
        raise SpecError("EXPERIMENT", f"no MLflow store at {db}")
    exp = MlflowClient(tracking_uri).get_experiment_by_name(experiment)
    if exp is None:
        raise SpecError("EXPERIMENT", f"no experiment named {experiment!r} at {tracking_uri}")
    return f"{base}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning"
