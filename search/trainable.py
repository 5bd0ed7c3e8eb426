"""The Tune trainable: trains one cohort on a worker and reports every member's result.

Workers never sample and never talk to MLflow: they train and report (the driver owns
Optuna and tracking, so parallel trials never race on a store).
"""

from __future__ import annotations

import dataclasses
import os
import resource
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from models.convergence import Convergence
    from models.datasets import Dataset
    from models.diagnostics import DiagnosticsConfig
    from models.train import RunResult

# PyTorch and models.* are imported where they are used: Ray imports this module while it
# starts a trial's actor, and the first trial then starts as soon as a textbook one would.


@dataclass(frozen=True)
class WorkerContext:
    """Everything a worker needs besides the cohort; shipped once through the object store."""

    data: Dataset
    convergence: Convergence
    width: int
    momentum: float
    batch_size: int
    cpus_per_trial: float
    diagnostics: DiagnosticsConfig | None = None
    """Mechanism diagnostics at evaluation points (None: off)."""


def cohort_config(
    activation: str, depth: int, optimizer: str, members: list[dict[str, Any]]
) -> dict[str, Any]:
    """The Tune trial config: plain data only (Tune copies and logs configs)."""
    return {"activation": activation, "depth": depth, "optimizer": optimizer, "members": members}


def result_to_dict(result: RunResult, convergence: Convergence) -> dict[str, Any]:
    from models.convergence import score

    out = dataclasses.asdict(result)
    out["score"] = score(result.summary, convergence)
    return out


def pick_device() -> torch.device:
    import torch

    # Ray sets CUDA_VISIBLE_DEVICES to the GPUs assigned to this trial; with none assigned,
    # torch sees no device and we stay on the CPU (the default).
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def run_cohort(config: dict[str, Any], context: WorkerContext) -> dict[str, Any]:
    """Train the cohort described by `config`; return the report (plain data)."""
    entry = resource.getrusage(resource.RUSAGE_SELF)
    import torch

    from models.diagnostics import CohortDiagnostics
    from models.train import CohortSpec, Member, train_cohort

    # Tiny MLPs are bound by per-op overhead: more threads than CPUs granted only contend.
    torch.set_num_threads(max(1, int(context.cpus_per_trial)))
    members = tuple(
        Member(
            init=m["init"],
            lr=float(m["lr"]),
            seed=int(m["seed"]),
            depth=int(m["depth"]) if m.get("depth") is not None else None,
        )
        for m in config["members"]
    )
    cohort = CohortSpec(
        activation=config["activation"],
        depth=int(config["depth"]),
        width=context.width,
        optimizer=config["optimizer"],
        momentum=context.momentum,
        batch_size=context.batch_size,
        members=members,
    )
    device = pick_device()
    started = time.time()
    diag = (
        CohortDiagnostics(context.diagnostics, context.data, [m.lr for m in members], device)
        if context.diagnostics is not None
        else None
    )
    cpu0 = time.process_time()
    results = train_cohort(
        context.data,
        cohort,
        context.convergence,
        device=device,
        on_eval=diag,
        stop_at=config.get("stop_at"),
        race=bool(config.get("race", False)),
    )
    train_cpu = time.process_time() - cpu0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    reports = [result_to_dict(r, context.convergence) for r in results]
    if diag is not None:
        for i, report in enumerate(reports):
            report["diagnostics"] = diag.curve(i)
            report["mechanisms"] = diag.summary(i)
    return {
        "members": reports,
        "started_at": started,
        "ended_at": time.time(),
        "hostname": socket.gethostname(),
        "device": str(device),
        # Accounting for benchmarks: CPU spent training vs. everything this worker process
        # has spent since it started (imports, Ray plumbing, earlier cohorts).
        "worker_pid": os.getpid(),
        "train_cpu": train_cpu,
        "worker_cpu": usage.ru_utime + usage.ru_stime,
        "worker_cpu_at_entry": entry.ru_utime + entry.ru_stime,
        "worker_rss_mb": usage.ru_maxrss / 1024.0,
    }


def tune_trainable(config: dict[str, Any], context: WorkerContext) -> None:
    """Function trainable for Ray Tune (one report at the end of the cohort)."""
    import ray
    from ray import tune

    report = run_cohort(config, context)
    report["node_id"] = ray.get_runtime_context().get_node_id()
    report["node_ip"] = ray.util.get_node_ip_address()
    report["cohort_best_score"] = min(m["score"] for m in report["members"])
    tune.report(report)
