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
    """The lr probe on every activation's best configuration (leaderboard rows with a run).

    With Ray running (the end of a search), the probes run as Ray tasks side by side, one
    trial's resources each; otherwise one after another in this process.
    """
    if not spec.lr_probe.enabled:
        return {}
    seeds = [member_seed(spec, i) for i in range(spec.seeds)]
    jobs: list[dict[str, Any]] = [
        {
            "activation": str(row.activation),
            "depth": int(row.depth),
            "init": str(row.init),
            "optimizer": str(row.optimizer),
            "best_lr": float(row.lr),
            "run_id": str(row.run_id),
        }
        for row in board.itertuples()
        if row.run_id is not None and not pd.isna(row.lr) and not pd.isna(row.depth)
    ]
    import ray

    if ray.is_initialized() and len(jobs) > 1:
        task = ray.remote(num_cpus=spec.resources.cpus_per_trial)(_probe)
        data_ref = ray.put(data)
        results = ray.get([task.remote(spec, data_ref, conv, seeds, job) for job in jobs])
    else:
        results = [_probe(spec, data, conv, seeds, job) for job in jobs]
    return {str(job["activation"]): result for job, result in zip(jobs, results, strict=True)}


def _probe(
    spec: SearchSpec, data: Dataset, conv: Convergence, seeds: list[int], job: dict[str, Any]
) -> dict[str, Any]:
    # Like a trial's worker: tiny tensors, so as many threads as a trial gets (models.train
    # measured OpenMP spin-waiting on busy cores costing 10x).
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(spec.resources.cpus_per_trial)))
    try:
        result = probe_lr(
            data,
            activation=job["activation"],
            depth=job["depth"],
            init=job["init"],
            optimizer=job["optimizer"],
            best_lr=job["best_lr"],
            width=spec.model.width,
            momentum=spec.space.momentum,
            batch_size=spec.space.batch_size,
            seeds=seeds,
            conv=conv,
            factor=spec.lr_probe.factor,
            points=spec.lr_probe.points,
            rounds=spec.lr_probe.rounds,
        )
    finally:
        torch.set_num_threads(threads)
    return {**result.to_dict(), "run_id": job["run_id"]}


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
