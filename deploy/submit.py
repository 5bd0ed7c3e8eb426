"""`actsweep submit`: run a search on a Ray cluster as a Ray job, at most once per search.

The job ships the project's code and the spec (exactly as written) in its runtime
environment and runs `actsweep run` on the cluster, where it joins the cluster instead of
starting a Ray of its own. Its submission id derives from the search id (the spec's name and
content hash), so a second submit of the same search finds the first job and reports it; a
new attempt (`-r2`, `-r3`, ...) is only made after the previous one failed or was stopped,
and it resumes from the Optuna storage and MLflow. The cluster must reach the tracking
store and the Optuna storage: an MLflow server and a database or a journal file on shared
storage (relative paths are refused: they would land in the job's temporary directory).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

from deploy.jobs import (
    ACTIVE,
    META_EXPERIMENT,
    META_SEARCH_ID,
    META_SPEC_HASH,
    META_TRACKING_URI,
    SUBMISSION_PREFIX,
    follow,
)
from search.errors import SpecError
from search.paths import check_tracking_uri
from search.spec import SearchSpec
from search.tracking import redact

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

SPEC_FILE = "actsweep-spec.yaml"
"""Name of the spec inside the job's working directory."""
PACKAGES = ("models", "search", "deploy")
"""The project's code that a job needs; copied from wherever it is imported from."""
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")


def submission_id(search_id: str, attempt: int = 1) -> str:
    return f"{SUBMISSION_PREFIX}{search_id}" + ("" if attempt == 1 else f"-r{attempt}")


def attempt_of(job_id: str, search_id: str) -> int | None:
    """Which attempt of `search_id` a submission id is, or None if it is not one."""
    base = submission_id(search_id)
    if job_id == base:
        return 1
    match = re.fullmatch(re.escape(base) + r"-r([0-9]+)", job_id)
    return int(match.group(1)) if match and int(match.group(1)) >= 2 else None


@dataclass(frozen=True)
class Decision:
    action: Literal["submit", "exists"]
    submission_id: str
    status: str | None = None
    """Status of the job found (action "exists")."""
    previous: str | None = None
    """The last failed or stopped attempt that a new submission follows."""


def decide(search_id: str, jobs: Mapping[str, str]) -> Decision:
    """Submit a new attempt, or point at the job that already runs or ran this search (pure).

    `jobs` maps the cluster's submission ids to their status.
    """
    attempts = sorted(
        (n, job_id, status)
        for job_id, status in jobs.items()
        if (n := attempt_of(job_id, search_id)) is not None
    )
    live = [a for a in attempts if a[2] in ACTIVE or a[2] == "SUCCEEDED"]
    if live:
        _, job_id, status = live[-1]
        return Decision("exists", job_id, status=status)
    if not attempts:
        return Decision("submit", submission_id(search_id))
    last, last_id, _ = attempts[-1]
    return Decision("submit", submission_id(search_id, last + 1), previous=last_id)


def _absolute_path_uri(uri: str) -> bool:
    for scheme in ("sqlite:///", "file://"):
        if uri.startswith(scheme):
            return uri[len(scheme) :].startswith("/")
    return True


def cluster_tracking_uri(
    cli: str | None, spec_uri: str | None, env: Mapping[str, str] | None = None
) -> str:
    """The MLflow URI the job tracks to: --tracking-uri, tracking.uri, MLFLOW_TRACKING_URI.

    No silent default: MLflow's own (sqlite:///mlflow.db) would be a file in the job's
    temporary working directory, gone with it.
    """
    env = os.environ if env is None else env
    uri = cli or spec_uri or env.get("MLFLOW_TRACKING_URI") or ""
    field = "--tracking-uri" if cli else "tracking.uri" if spec_uri else "MLFLOW_TRACKING_URI"
    if not uri:
        raise SpecError(
            "--tracking-uri",
            "a search on a cluster needs a tracking store the cluster reaches: an MLflow "
            "server (http://mlflow.internal:5000) or, on storage every node mounts, "
            "sqlite:////shared/mlflow.db",
        )
    if not _absolute_path_uri(uri):
        raise SpecError(
            field,
            f"{uri!r} is a relative path: on the cluster it would land in the job's temporary "
            "working directory; use an MLflow server or an absolute path on shared storage",
        )
    if uri.startswith("sqlite:"):
        # Checked on the cluster, where the file lives; here only its shape.
        return uri
    return check_tracking_uri(uri, field)


def cluster_optuna_storage(cli: str | None, spec_storage: str | None) -> str | None:
    """--optuna-storage or tracking.optuna_storage, checked; None: the job's default.

    The default is a journal file beside the tracking store's state on the driver's node
    (for an MLflow server, ~/.actsweep on the head): it survives the driver, not the head.
    """
    location = cli or spec_storage
    field = "--optuna-storage" if cli else "tracking.optuna_storage"
    if location is None:
        return None
    if "://" in location:
        scheme = location.split("://", 1)[0].split("+")[0]
        if scheme not in ("postgresql", "mysql"):
            raise SpecError(
                field,
                f"unsupported Optuna storage {redact(location)!r}",
                ["postgresql://...", "mysql://...", "/absolute/path/optuna.journal"],
            )
        return location
    if not location.startswith("/"):
        raise SpecError(
            field,
            f"journal path {location!r} is relative: on the cluster it would land in the job's "
            "temporary working directory; use an absolute path on shared storage or a database",
        )
    return location


def entrypoint(tracking_uri: str, optuna_storage: str | None, spec_file: str = SPEC_FILE) -> str:
    """The job's shell command: the same `actsweep run` a user types, on the cluster."""
    args = ["python", "-m", "search.cli", "run", spec_file, "--tracking-uri", tracking_uri]
    if optuna_storage is not None:
        args += ["--optuna-storage", optuna_storage]
    return shlex.join(args)


def stage(spec_text: str, dest: Path) -> Path:
    """Lay out the job's working directory in `dest`: the project's packages and the spec."""
    import importlib

    for name in PACKAGES:
        source = Path(importlib.import_module(name).__file__ or "").parent
        shutil.copytree(source, dest / name, ignore=_IGNORE)
    (dest / SPEC_FILE).write_text(spec_text)
    return dest


def runtime_env(working_dir: Path) -> dict[str, Any]:
    # Only code and the spec: dependencies come installed on the nodes (ray_cluster.yaml's
    # setup commands, the KubeRay image); no env_vars, so no secret lands in the job's record.
    return {"working_dir": str(working_dir), "excludes": ["__pycache__", "*.pyc"]}


def job_metadata(spec: SearchSpec, tracking_uri: str) -> dict[str, str]:
    return {
        META_SEARCH_ID: spec.search_id,
        META_SPEC_HASH: spec.spec_hash(),
        META_EXPERIMENT: spec.experiment_name,
        META_TRACKING_URI: redact(tracking_uri),
    }


def _submit(
    client: JobSubmissionClient,
    decision: Decision,
    spec: SearchSpec,
    spec_text: str,
    tracking_uri: str,
    optuna_storage: str | None,
) -> str | None:
    """Send the job; None when another submit of the same search won the race."""
    with tempfile.TemporaryDirectory(prefix="actsweep-job-") as tmp:
        staged = stage(spec_text, Path(tmp))
        try:
            return str(
                client.submit_job(
                    entrypoint=entrypoint(tracking_uri, optuna_storage),
                    submission_id=decision.submission_id,
                    runtime_env=runtime_env(staged),
                    metadata=job_metadata(spec, tracking_uri),
                    # The driver only samples and logs: it needs no CPU slot of its own
                    # (and no GPU), so the workers' resources all go to trials.
                    entrypoint_num_cpus=0,
                )
            )
        except RuntimeError as err:
            if "already exists" in str(err):
                return None
            first = " ".join(str(err).split())[:300]
            raise SpecError("--address", f"the Ray Jobs API refused the job: {first}") from None


def submit_search(
    client: JobSubmissionClient,
    address: str,
    spec: SearchSpec,
    spec_text: str,
    *,
    tracking_uri: str,
    optuna_storage: str | None,
    wait: bool,
    out: TextIO | None = None,
) -> int:
    """Submit (or find) the job of `spec`; with `wait`, follow it and return its outcome."""
    out = sys.stdout if out is None else out
    jobs = {str(j.submission_id): str(j.status) for j in client.list_jobs() if j.submission_id}
    decision = decide(spec.search_id, jobs)
    job_id = decision.submission_id
    follow_hint = f"actsweep jobs logs {job_id} --follow --address {address}"
    sent = decision.action == "submit" and (
        _submit(client, decision, spec, spec_text, tracking_uri, optuna_storage) is not None
    )
    if decision.action == "submit" and not sent:
        # Another submit of the same search got there between our look and our send.
        decision = Decision("exists", job_id, status=str(client.get_job_status(job_id)))
    if decision.action == "exists":
        print(
            f"search {spec.search_id} was already submitted: Ray job {job_id} is "
            f"{decision.status} (not started again)",
            file=out,
        )
    else:
        again = f" (attempt after {decision.previous}, resumes it)" if decision.previous else ""
        print(
            f"submitted search {spec.search_id} as Ray job {job_id} to {address}{again}", file=out
        )
    print(f"  follow:      {follow_hint}", file=out)
    print(f"  dashboard:   {address}/#/jobs", file=out)
    print(
        f"  leaderboard: actsweep leaderboard {spec.experiment_name} "
        f"--tracking-uri {redact(tracking_uri)}",
        file=out,
        flush=True,
    )
    if wait:
        return follow(client, job_id, out)
    return 0
