"""The `actsweep` command line: run, sync, validate, leaderboard, report, ui, server; submit
and jobs (deploy/cli.py).

Bad input (a spec, a flag, a URI) ends in one line naming the field and exit code 2,
before anything is written. A search whose results MLflow could not take (the tracking
server stayed away) ends with exit code 3: the results are kept in a local spool, and
`actsweep sync SPEC` (or the same `actsweep run`) uploads them and finishes the search.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from deploy.cli import CLUSTER_COMMANDS, add_cluster_parsers
from search.errors import SpecError

EXIT_USAGE = 2
EXIT_SPOOLED = 3
"""The search ran, but some results are only in the local spool: not a failure of the
search (nothing is lost), not a success a pipeline should build on (MLflow is incomplete)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line instead of argparse's usage block: the message names the flag.
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_uri(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: the spec's tracking.uri, then MLFLOW_TRACKING_URI, "
        "then sqlite:///mlflow.db in the working directory)",
    )


def _add_optuna(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--optuna-storage",
        default=None,
        help="Optuna storage: postgresql://... or a journal file path "
        "(default: the spec's tracking.optuna_storage, else .actsweep/optuna.journal beside the store)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="actsweep", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run (or resume) a search and print its leaderboard")
    run.add_argument("spec", help="path to the search spec (YAML)")
    _add_uri(run)
    run.add_argument("--address", default=None, help="Ray cluster address (default: a local Ray)")
    _add_optuna(run)
    run.add_argument("--quiet", action="store_true", help="print only the leaderboard")
    run.add_argument(
        "--timings-json",
        default=None,
        metavar="PATH",
        help="write wall-clock marks and worker CPU accounting as JSON (for benchmarks)",
    )

    syn = sub.add_parser(
        "sync",
        help="upload a search's spooled results to MLflow (after a tracking-server outage "
        "or a killed driver); finishes the search if its budget is done. Trains no trial",
    )
    syn.add_argument("spec", help="path to the search spec (YAML) given to `actsweep run`")
    _add_uri(syn)
    _add_optuna(syn)

    val = sub.add_parser("validate", help="check a spec without running anything")
    val.add_argument("spec")

    lb = sub.add_parser("leaderboard", help="print the leaderboard of a search from MLflow")
    lb.add_argument("experiment", help="MLflow experiment name (the spec's name by default)")
    lb.add_argument(
        "--search", default=None, help="search id (default: the latest in the experiment)"
    )
    lb.add_argument("--format", default="table", choices=("table", "json", "csv", "markdown"))
    _add_uri(lb)

    rep = sub.add_parser(
        "report", help="write report.html and report.md for a search (also logged to MLflow)"
    )
    rep.add_argument("experiment", help="MLflow experiment name (the spec's name by default)")
    rep.add_argument("--out", required=True, help="directory to write the report into")
    rep.add_argument(
        "--search", default=None, help="search id (default: the latest in the experiment)"
    )
    _add_uri(rep)

    ui = sub.add_parser("ui", help="open the MLflow UI on this tracking store (127.0.0.1)")
    ui.add_argument(
        "experiment", nargs="?", default=None, help="open this experiment's runs directly"
    )
    _add_uri(ui)
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument(
        "--host", default="127.0.0.1", help="bind address (keep loopback unless behind a proxy)"
    )

    from deploy.server import add_parser as add_server_parser

    add_server_parser(sub)
    add_cluster_parsers(sub)
    return parser


def _cmd_validate(args: argparse.Namespace) -> int:
    from search.spec import load_spec

    spec = load_spec(args.spec)
    total = spec.budget.trials_per_activation * len(spec.space.activations)
    print(
        f"{args.spec}: ok (search {spec.search_id}, {total} trials, experiment '{spec.experiment_name}')"
    )
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from search.paths import resolve_tracking_uri
    from search.remote import prepare_remote, uri_field
    from search.spec import load_spec

    spec = load_spec(args.spec)
    uri = resolve_tracking_uri(args.tracking_uri, spec.tracking.uri)
    spec_text = Path(args.spec).read_text()
    # Before any run, study or state directory exists: a server that is down fails here.
    prepare_remote(uri, uri_field(args.tracking_uri, spec.tracking.uri))

    from search.orchestrate import run_search

    outcome = run_search(
        spec,
        tracking_uri=uri,
        address=args.address,
        optuna_storage_location=args.optuna_storage,
        spec_text=spec_text,
        out=None if args.quiet else sys.stdout,
    )
    if args.timings_json:
        import json

        Path(args.timings_json).write_text(json.dumps(outcome.timings, indent=2))
    if outcome.spooled:
        return _spooled(args.spec, uri, outcome)
    if args.quiet:
        from search.leaderboard import render

        print(render(outcome.leaderboard, "table"), end="")
    return 0


def _spooled(spec_path: str, uri: str, outcome: Any) -> int:
    print(
        f"actsweep: {outcome.spooled} trials of search {outcome.search_id} are not in MLflow "
        f"yet (MLflow at {uri}: {outcome.last_error or 'unreachable'}); they are kept in "
        f"{outcome.spool_path}. Run `actsweep sync {spec_path}` (or the same `actsweep run`) "
        "once the tracking server answers again.",
        file=sys.stderr,
    )
    return EXIT_SPOOLED


def _cmd_sync(args: argparse.Namespace) -> int:
    from search.paths import resolve_tracking_uri
    from search.remote import prepare_remote, uri_field
    from search.spec import load_spec

    spec = load_spec(args.spec)
    uri = resolve_tracking_uri(args.tracking_uri, spec.tracking.uri)
    prepare_remote(uri, uri_field(args.tracking_uri, spec.tracking.uri))
    from search.orchestrate import sync_search

    outcome = sync_search(
        spec, tracking_uri=uri, optuna_storage_location=args.optuna_storage, out=sys.stdout
    )
    if outcome.spooled:
        return _spooled(args.spec, uri, outcome)
    if outcome.remaining:
        print(f"run `actsweep run {args.spec}` to continue the search")
    return 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from search.paths import resolve_tracking_uri
    from search.remote import prepare_remote, uri_field

    uri = resolve_tracking_uri(args.tracking_uri, None)
    prepare_remote(uri, uri_field(args.tracking_uri))
    from search.leaderboard import render
    from search.results import load_leaderboard

    board = load_leaderboard(args.experiment, tracking_uri=uri, search_id=args.search)
    print(render(board, args.format), end="")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from search.paths import resolve_tracking_uri
    from search.report import write_report

    uri = resolve_tracking_uri(args.tracking_uri, None)
    report = write_report(args.experiment, args.out, tracking_uri=uri, search_id=args.search)
    print(f"report of {report['search_id']} written to {args.out} (report.html, report.md)")
    print(report["question"])
    return 0


def _cmd_ui(args: argparse.Namespace) -> int:
    from search.paths import resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri, None)
    from search.remote import experiment_view, is_remote, prepare_remote, uri_field

    if is_remote(uri):
        # Server mode: the UI is already served there; open it instead of starting another.
        import webbrowser

        prepare_remote(uri, uri_field(args.tracking_uri))
        url = experiment_view(uri, uri, args.experiment)
        print(f"MLflow UI at {url}", flush=True)
        webbrowser.open(url)
        return 0
    if not 0 < args.port < 65536:
        raise SpecError("--port", f"{args.port} is not a TCP port (1..65535)")
    url = experiment_view(f"http://{args.host}:{args.port}", uri, args.experiment)
    # The interpreter running actsweep, not whatever `mlflow` is on PATH: `.venv/bin/actsweep`
    # works without an activated venv (and CI runs it so).
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    print(f"MLflow UI on {url} (Ctrl-C to stop)", flush=True)
    # Nothing here loads pickled models; a UI that would unpickle artifacts runs their code.
    os.execvpe(cmd[0], cmd, {**os.environ, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"})


def _cmd_server(args: argparse.Namespace) -> int:
    from deploy.server import main as serve

    return serve(args)


COMMANDS = {
    "run": _cmd_run,
    "sync": _cmd_sync,
    "validate": _cmd_validate,
    "leaderboard": _cmd_leaderboard,
    "report": _cmd_report,
    "ui": _cmd_ui,
    "server": _cmd_server,
    **CLUSTER_COMMANDS,
}


# No phoning home from a search service (and no network here): MLflow's telemetry and Ray's
# usage stats are off unless the user sets these variables themselves.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # MLflow announces schema creation at INFO on every new store; keep the console for results.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        return COMMANDS[args.command](args)
    except SpecError as err:
        print(f"actsweep: error: {err.one_line()}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("actsweep: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
