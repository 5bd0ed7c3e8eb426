"""End-of-search science: probe each activation's largest stable learning rate, build the
convergence map, and write both (JSON and pictures) to the search's parent run.

Runs on the driver after the last trial is in MLflow, so the map is computed from exactly the
child runs a later `actsweep report` reads.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from mlflow.tracking import MlflowClient

from models.convergence import Convergence
from models.datasets import Dataset
from search.convergence_map import convergence_map, pictures
from search.probe import probe_lr
from search.space import member_seed
from search.spec import SearchSpec

MAP_FILE = "convergence_map.json"
MAP_DIR = "convergence_map"


def run_probes(
    spec: SearchSpec, data: Dataset, board: pd.DataFrame, conv: Convergence
) -> dict[str, dict[str, Any]]:
    """The lr probe on every activation's best configuration (leaderboard rows with a run)."""
    if not spec.lr_probe.enabled:
        return {}
    seeds = [member_seed(spec, i) for i in range(spec.seeds)]
    out: dict[str, dict[str, Any]] = {}
    # Like a trial's worker: tiny tensors, so as many threads as a trial gets (models.train
    # measured OpenMP spin-waiting on busy cores costing 10x).
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(spec.resources.cpus_per_trial)))
    try:
        for row in board.itertuples():
            probe = _probe_row(spec, data, conv, seeds, row)
            if probe is not None:
                out[str(row.activation)] = probe
    finally:
        torch.set_num_threads(threads)
    return out


def _probe_row(
    spec: SearchSpec, data: Dataset, conv: Convergence, seeds: list[int], row: Any
) -> dict[str, Any] | None:
    if row.run_id is None or pd.isna(row.lr) or pd.isna(row.depth):
        return None
    result = probe_lr(
        data,
        activation=str(row.activation),
        depth=int(row.depth),
        init=str(row.init),
        optimizer=str(row.optimizer),
        best_lr=float(row.lr),
        width=spec.model.width,
        momentum=spec.space.momentum,
        batch_size=spec.space.batch_size,
        seeds=seeds,
        conv=conv,
        factor=spec.lr_probe.factor,
        points=spec.lr_probe.points,
        rounds=spec.lr_probe.rounds,
    )
    return {**result.to_dict(), "run_id": str(row.run_id)}


def log_convergence_map(
    client: MlflowClient,
    parent_run_id: str,
    spec: SearchSpec,
    runs: pd.DataFrame,
    probes: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Build the map from the child runs and write JSON + pictures to the parent run."""
    cmap = convergence_map(runs, spec.space.activations, probes)
    cmap["search_id"] = spec.search_id
    cmap["max_steps"] = spec.convergence.max_steps
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / MAP_FILE
        path.write_text(json.dumps(cmap, indent=2))
        client.log_artifact(parent_run_id, str(path))
        pics = Path(tmp) / MAP_DIR
        pics.mkdir()
        for name, png in pictures(cmap, spec.convergence.max_steps).items():
            (pics / name).write_bytes(png)
        client.log_artifacts(parent_run_id, str(pics), artifact_path=MAP_DIR)
    return cmap
