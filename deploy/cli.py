"""The cluster commands of the `actsweep` CLI: `submit` and `jobs list|status|logs|stop`.

Kept apart from search/cli.py, which only registers them; imports stay lazy so that
`actsweep --help` does not pay for Ray.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

ADDRESS_FLAG_HELP = (
    "Ray Jobs API of the cluster, e.g. http://127.0.0.1:8265 through `ray dashboard "
    "ray_cluster.yaml` (default: RAY_API_SERVER_ADDRESS, then an http(s):// RAY_ADDRESS). "
    "The token comes from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token"
)


def _add_address(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=None, help=ADDRESS_FLAG_HELP)
    p.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="talk to a cluster that runs without token authentication (unsafe)",
    )


def add_cluster_parsers(sub: Any) -> None:
    """Register `submit` and `jobs` on the `actsweep` subparsers."""
    submit = sub.add_parser("submit", help="run a search on a Ray cluster as a Ray job")
    submit.add_argument("spec", help="path to the search spec (YAML)")
    _add_address(submit)
    submit.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI the cluster reaches (default: the spec's tracking.uri, then "
        "MLFLOW_TRACKING_URI; an MLflow server, or sqlite:////abs/path on shared storage)",
    )
    submit.add_argument(
        "--optuna-storage",
        default=None,
        help="Optuna storage the cluster reaches: postgresql://... or an absolute journal path "
        "on shared storage (default: the spec's tracking.optuna_storage, else a journal on the "
        "driver's node)",
    )
    submit.add_argument(
        "--wait", action="store_true", help="stream the job's logs and exit with its outcome"
    )

    jobs = sub.add_parser("jobs", help="list, inspect, follow or stop searches on a Ray cluster")
    actions = jobs.add_subparsers(dest="action", required=True, parser_class=type(jobs))
    listing = actions.add_parser("list", help="the searches submitted to the cluster")
    listing.add_argument("--all", action="store_true", help="every Ray job, not only searches")
    _add_address(listing)
    for name, text in (
        ("status", "status of a job"),
        ("logs", "logs of a job"),
        ("stop", "stop a job"),
    ):
        p = actions.add_parser(name, help=text)
        p.add_argument("job", help="submission id (actsweep-<search id>) or search id")
        _add_address(p)
        if name == "logs":
            p.add_argument(
                "--follow",
                action="store_true",
                help="stream until the job ends; exit with its outcome",
            )


def _quiet_ray_client() -> None:
    # The job SDK logs each package upload and websocket close at INFO on our console.
    for name in ("ray.dashboard", "ray._private.runtime_env"):
        logging.getLogger(name).setLevel(logging.WARNING)


def cmd_submit(args: argparse.Namespace) -> int:
    from deploy.client import connect, resolve_address
    from deploy.submit import cluster_optuna_storage, cluster_tracking_uri, submit_search
    from search.spec import load_spec

    _quiet_ray_client()
    spec = load_spec(args.spec)
    spec_text = Path(args.spec).read_text()
    uri = cluster_tracking_uri(args.tracking_uri, spec.tracking.uri)
    storage = cluster_optuna_storage(args.optuna_storage, spec.tracking.optuna_storage)
    address = resolve_address(args.address)
    client = connect(address, allow_unauthenticated=args.allow_unauthenticated)
    return submit_search(
        client, address, spec, spec_text, tracking_uri=uri, optuna_storage=storage, wait=args.wait
    )


def cmd_jobs(args: argparse.Namespace) -> int:
    from deploy.client import connect, resolve_address
    from deploy.jobs import run_jobs_command

    _quiet_ray_client()
    address = resolve_address(args.address)
    client = connect(address, allow_unauthenticated=args.allow_unauthenticated)
    return run_jobs_command(
        client,
        args.action,
        getattr(args, "job", None),
        follow_logs=getattr(args, "follow", False),
        show_all=getattr(args, "all", False),
    )


CLUSTER_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "submit": cmd_submit,
    "jobs": cmd_jobs,
}
