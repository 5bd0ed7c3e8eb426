"""Leaderboards as plain MLflow data: one summary run per activation of every search.

A script with nothing but `mlflow` installed reads a search's leaderboard with

    mlflow.search_runs(experiment_names=[EXPERIMENT],
                       filter_string="tags.`actsweep.leaderboard` = 'SEARCH_ID'",
                       order_by=["metrics.rank ASC"])

Each summary run carries the leaderboard's text columns as params and its numeric columns
as metrics, under the same names (`run_id` is the best child run; a null is an absent
metric, so NaN in the DataFrame). Summary runs are nested under the search's parent run and
keyed by `actsweep.leaderboard_key = SEARCH_ID/ACTIVATION`, so finishing a search again
updates them in place instead of adding rows, and two searches in one experiment never mix.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pandas as pd
from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient

from search.leaderboard import COLUMNS, to_records
from search.spec import SearchSpec
from search.tracking import (
    PARENT_TAG,
    TAG_ACTIVATION,
    TAG_ROLE,
    TAG_SEARCH_ID,
    TAG_SEARCH_NAME,
    Tracker,
    close_run,
    create_run_once,
)

TAG_LEADERBOARD = "actsweep.leaderboard"
TAG_LEADERBOARD_KEY = "actsweep.leaderboard_key"
ROLE_LEADERBOARD = "leaderboard"

TEXT_COLUMNS = ("activation", "init", "optimizer", "run_id")
NUMERIC_COLUMNS = tuple(c for c in COLUMNS if c not in TEXT_COLUMNS)
BOOL_COLUMNS = ("reached",)
INT_COLUMNS = ("rank", "steps_to_target", "depth", "trials", "finished")


def leaderboard_filter(search_id: str) -> str:
    """The `filter_string` that selects one search's leaderboard rows."""
    return f"tags.`{TAG_LEADERBOARD}` = '{search_id}'"


def summary_payload(record: dict[str, Any]) -> tuple[dict[str, str], dict[str, float]]:
    """Params and metrics of one leaderboard row (a `to_records` dict); nulls are left out."""
    params = {c: str(record[c]) for c in TEXT_COLUMNS if record.get(c) is not None}
    metrics: dict[str, float] = {}
    for c in NUMERIC_COLUMNS:
        v = record.get(c)
        if v is not None:
            metrics[c] = float(v)
    return params, metrics


def records_from_runs(runs: pd.DataFrame) -> list[dict[str, Any]]:
    """Leaderboard rows back from `mlflow.search_runs` output of summary runs, by rank."""
    rows = []
    for _, r in runs.iterrows():
        row: dict[str, Any] = {}
        for c in COLUMNS:
            if c in TEXT_COLUMNS:
                v = r.get(f"params.{c}")
                row[c] = None if v is None or (isinstance(v, float) and math.isnan(v)) else v
                continue
            v = r.get(f"metrics.{c}")
            if v is None or math.isnan(float(v)):
                row[c] = None
            elif c in BOOL_COLUMNS:
                row[c] = bool(v)
            elif c in INT_COLUMNS:
                row[c] = int(v)
            else:
                row[c] = float(v)
        rows.append(row)
    return sorted(rows, key=lambda row: row["rank"])


def _same(run: Any, params: dict[str, str], metrics: dict[str, float]) -> bool:
    return dict(run.data.params) == params and dict(run.data.metrics) == metrics


def log_summary_runs(
    client: MlflowClient,
    experiment_id: str,
    parent_run_id: str,
    search_id: str,
    search_name: str,
    board: pd.DataFrame,
) -> list[str]:
    """Write (or bring up to date) the summary runs of `board`; return their ids by rank."""
    existing: dict[str, Any] = {}
    for r in client.search_runs(
        [experiment_id],
        filter_string=leaderboard_filter(search_id),
        order_by=["attributes.start_time ASC"],
    ):
        key = r.data.tags.get(TAG_LEADERBOARD_KEY, "")
        if key in existing:
            client.delete_run(r.info.run_id)  # a twin left by an interrupted finish
        else:
            existing[key] = r
    now = int(time.time() * 1000)
    ids = []
    wanted = set()
    for record in to_records(board):
        key = f"{search_id}/{record['activation']}"
        wanted.add(key)
        params, metrics = summary_payload(record)
        old = existing.get(key)
        if old is not None and old.info.status == "FINISHED" and _same(old, params, metrics):
            ids.append(old.info.run_id)
            continue
        if old is not None:
            # Params cannot change once logged: a changed row is a new run. (So is a row
            # whose run an interrupted finish left RUNNING; it is closed, never left open.)
            close_run(client, old.info.run_id)
        tags = {
            TAG_ROLE: ROLE_LEADERBOARD,
            TAG_LEADERBOARD: search_id,
            TAG_LEADERBOARD_KEY: key,
            TAG_SEARCH_ID: search_id,
            TAG_SEARCH_NAME: search_name,
            TAG_ACTIVATION: str(record["activation"]),
            PARENT_TAG: parent_run_id,
        }
        run_id = create_run_once(
            client,
            experiment_id,
            {TAG_ROLE: ROLE_LEADERBOARD, TAG_LEADERBOARD_KEY: key},
            tags=tags,
            run_name=f"leaderboard-{record['rank']}-{record['activation']}",
            start_time=now,
        )
        client.log_batch(
            run_id,
            params=[Param(k, v) for k, v in params.items()],
            metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
        )
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED), end_time=now)
        ids.append(run_id)
    for key, run in existing.items():
        if key not in wanted:
            client.delete_run(run.info.run_id)
    return ids


def publish(tracker: Tracker, spec: SearchSpec, tracking_uri: str, ok: bool = True) -> pd.DataFrame:
    """End a search: leaderboard files, plots and summary runs, then mark the parent finished.

    The parent's state tag is set last, so an interruption anywhere before leaves a search
    that the same command resumes and publishes again (idempotently).
    """
    from search.leaderboard import compute_leaderboard, leaderboard_files, trials_table
    from search.plots import plot_files
    from search.tracking import trial_runs_of

    trials = trials_table(trial_runs_of(tracker.experiment_id, spec.search_id, tracking_uri))
    board = compute_leaderboard(trials, spec.space.activations)
    files: dict[str, str | bytes] = dict(leaderboard_files(board))
    files.update(
        plot_files(
            tracker.client,
            board,
            trials,
            search_id=spec.search_id,
            activations=spec.space.activations,
            target_loss=spec.convergence.target_loss,
        )
    )
    log_summary_runs(
        tracker.client,
        tracker.experiment_id,
        tracker.parent_run_id,
        spec.search_id,
        spec.name,
        board,
    )
    tracker.finish(files, ok=ok)
    return board
