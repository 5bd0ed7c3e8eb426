"""Run one search end to end: Optuna studies, Ray Tune, MLflow, leaderboard.

Kept thin: it wires the adapters (searcher, trainable, tracker) and owns the order of
side effects, so a failure leaves a state that re-running the same command resumes.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import optuna
import pandas as pd

from models.convergence import Convergence
from models.datasets import load_dataset
from models.diagnostics import DiagnosticsConfig
from search.capacity import Capacity, cluster_shapes, plan_capacity
from search.errors import SpecError
from search.leaderboard import compute_leaderboard, render, trials_table
from search.paths import check_private, check_private_tree, private_file, state_dir
from search.progress import Progress
from search.remote import bound_client_retries, is_remote
from search.searcher import CohortOutcome, CohortSearcher
from search.space import derive_seed, study_name
from search.spec import SearchSpec
from search.summary import publish
from search.tracking import TAG_OPTUNA_STORAGE, Tracker, redact, trial_runs_of
from search.trainable import WorkerContext

# Tune's per-trial result files and console reporter are pure overhead here: results go
# to MLflow through our tracker, and progress is our own.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "1000")


@dataclass(frozen=True)
class SearchOutcome:
    search_id: str
    experiment_id: str
    parent_run_id: str
    leaderboard: pd.DataFrame
    already_finished: bool = False
    timings: dict[str, Any] = field(default_factory=dict)
    """Wall-clock marks (epoch seconds) and worker accounting, for benchmarks."""


def convergence_of(spec: SearchSpec) -> Convergence:
    c = spec.convergence
    return Convergence(
        target_loss=c.target_loss,
        target_accuracy=c.target_accuracy,
        max_steps=c.max_steps,
        eval_every=c.eval_every,
        divergence_factor=c.divergence_factor,
    )


def diagnostics_of(spec: SearchSpec) -> DiagnosticsConfig | None:
    d = spec.diagnostics
    if not d.enabled:
        return None
    return DiagnosticsConfig(
        every=d.every,
        probe_size=d.probe_size,
        sharpness=d.sharpness,
        sharpness_iters=d.sharpness_iters,
    )


def make_sampler(spec: SearchSpec, activation: str) -> optuna.samplers.BaseSampler:
    seed = derive_seed(spec.seed, "sampler", activation)
    name = spec.sampler.name
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=spec.sampler.n_startup_trials)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=spec.sampler.n_startup_trials)


def optuna_storage(location: str) -> optuna.storages.BaseStorage:
    """A database URL (server mode) or the path of a journal file (the default)."""
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    if "://" in location:
        return RDBStorage(location)
    path = Path(location).expanduser()
    if not path.parent.is_dir():
        raise SpecError("optuna storage", f"directory of the journal does not exist: {path.parent}")
    private_file(path, "optuna storage")  # created 0o600; an existing one must be private
    # A journal file, not SQLite: Optuna's own advice for concurrent writers, and it
    # survives the driver (resume) and can be browsed with optuna-dashboard.
    return JournalStorage(JournalFileBackend(location))


def optuna_location(spec: SearchSpec, tracking_uri: str, cli: str | None = None) -> str:
    """--optuna-storage, else the spec's tracking.optuna_storage, else a journal beside the store."""
    if cli is not None and not cli.strip():
        raise SpecError("--optuna-storage", "is empty; give a journal file path or a database URL")
    return cli or spec.tracking.optuna_storage or str(state_dir(tracking_uri) / "optuna.journal")


def open_studies(
    spec: SearchSpec, storage: optuna.storages.BaseStorage
) -> tuple[dict[str, optuna.Study], dict[str, int]]:
    """One study per activation, named after the search; the budget each still has."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    studies: dict[str, optuna.Study] = {}
    remaining: dict[str, int] = {}
    for act in spec.space.activations:
        study = optuna.create_study(
            study_name=study_name(spec.search_id, act),
            storage=storage,
            sampler=make_sampler(spec, act),
            direction="minimize",
            load_if_exists=True,
        )
        done = 0
        for t in study.get_trials(deepcopy=False):
            if t.state == optuna.trial.TrialState.RUNNING:
                # Asked by a driver that died before telling: its result never arrived.
                study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            elif t.state == optuna.trial.TrialState.COMPLETE:
                done += 1
        studies[act] = study
        remaining[act] = max(0, spec.budget.trials_per_activation - done)
    return studies, remaining


def _start_ray(address: str | None) -> bool:
    """Connect to (or start) Ray; True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(
        address=ray_address(address),
        include_dashboard=False,
        configure_logging=True,
        logging_level=logging.WARNING,
        log_to_driver=True,
    )
    return True


def ray_address(address: str | None) -> str:
    """The address for ray.init: the flag, else the cluster of the Ray job we run in, else "local"."""
    if address:
        return address
    # Inside a Ray job (`actsweep submit`, a KubeRay RayJob) the job supervisor sets this
    # and RAY_ADDRESS: join that cluster instead of starting a private one on the head.
    if os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"):
        return "auto"
    # "local" starts a private instance: a bare ray.init() would silently join any
    # cluster that `ray start` left running on this machine.
    return "local"


def _check_resources(spec: SearchSpec) -> Capacity:
    """Concurrent cohorts the cluster can hold; fail fast on impossible requests."""
    alive, launchable = cluster_shapes()
    want = spec.resources
    return plan_capacity(alive, launchable, want.cpus_per_trial, want.gpus_per_trial)


def _trial_name(trial: object) -> str:
    config = getattr(trial, "config", {}) or {}
    return f"{config.get('activation', 'cohort')}-d{config.get('depth', '')}-{getattr(trial, 'trial_id', '')}"


def _quiet_tune() -> None:
    # Tune's end-of-run analysis looks for per-trial result files we deliberately do not
    # write (results live in MLflow); its warning about them is noise.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


def leaderboard_of(spec: SearchSpec, experiment_id: str, tracking_uri: str) -> pd.DataFrame:
    runs = trial_runs_of(experiment_id, spec.search_id, tracking_uri)
    return compute_leaderboard(trials_table(runs), spec.space.activations)


def run_search(
    spec: SearchSpec,
    *,
    tracking_uri: str,
    address: str | None = None,
    optuna_storage_location: str | None = None,
    spec_text: str | None = None,
    out: TextIO | None = sys.stdout,
    trainable: Callable[..., None] | None = None,
) -> SearchOutcome:
    """Run (or resume, or report the finished) search described by `spec`.

    `trainable` replaces the Tune function trainable (same signature as
    search.trainable.tune_trainable); benchmarks and fault-injection tests use it.
    """
    if is_remote(tracking_uri):
        bound_client_retries()  # an unreachable server must fail, not hang (search.remote)
    # State another user could have written is refused before anything is written (exit 2):
    # the journal is replayed and Tune's experiment files are unpickled on resume.
    state = state_dir(tracking_uri)
    check_private(state / "tune")
    check_private_tree(state / "tune" / spec.search_id)
    location = optuna_location(spec, tracking_uri, optuna_storage_location)
    storage = optuna_storage(location)
    tracker = Tracker(tracking_uri, spec)
    found = tracker.existing()
    if found is not None and found.state == "finished":
        board = leaderboard_of(spec, found.experiment_id, tracking_uri)
        if out is not None:
            print(
                f"search {spec.search_id} already finished in experiment "
                f"'{spec.experiment_name}' (change `seed` or `name` to run a new one).",
                file=out,
            )
            print(render(board, "table"), file=out, end="")
        return SearchOutcome(spec.search_id, found.experiment_id, found.run_id, board, True)

    from ray import tune

    studies, remaining = open_studies(spec, storage)
    data = load_dataset(spec.dataset.name, spec.seed, spec.dataset.validation_fraction)
    # Everything the search creates from here (Tune's experiment files, Ray's session files,
    # MLflow's local artifact directories) is private to the user, whatever their umask: with a
    # group-writable umask (002) Tune's own files would otherwise be refused on the next resume.
    umask = os.umask(0o077)
    started_ray = _start_ray(address)
    try:
        capacity = _check_resources(spec)
        slots = capacity.slots
        parent = tracker.start(spec_text, {TAG_OPTUNA_STORAGE: redact(location)})
        total = spec.budget.trials_per_activation * len(spec.space.activations)
        progress = Progress(spec.space.activations, total, total - sum(remaining.values()), out)
        if out is not None:
            verb = "resuming" if found is not None else "search"
            print(
                f"{verb} {spec.search_id}: {total} trials over {len(studies)} activations, "
                f"{slots} concurrent; MLflow experiment '{spec.experiment_name}' at {tracking_uri}",
                file=out,
                flush=True,
            )

        timings: dict[str, Any] = {"workers": {}}

        def on_cohort_done(outcome: CohortOutcome) -> None:
            tracker.record(outcome)
            progress.update(outcome)
            timings["last_finished"] = time.time()
            timings.setdefault("completions", []).append((progress.done, time.time()))
            rep = outcome.report
            if "worker_pid" in rep:
                w = timings["workers"].setdefault(
                    f"{rep.get('node_id', '')}:{rep['worker_pid']}", {"train_cpu": 0.0}
                )
                w["train_cpu"] += rep["train_cpu"]
                w["worker_cpu"] = max(w.get("worker_cpu", 0.0), rep["worker_cpu"])
                w["worker_rss_mb"] = max(w.get("worker_rss_mb", 0.0), rep["worker_rss_mb"])

        def on_first_submit() -> None:
            timings.setdefault("first_submit", time.time())

        searcher = CohortSearcher(
            spec=spec,
            studies=studies,
            remaining=remaining,
            on_cohort_done=on_cohort_done,
            on_suggest=on_first_submit,
        )
        context = WorkerContext(
            data=data,
            convergence=convergence_of(spec),
            width=spec.model.width,
            momentum=spec.space.momentum,
            batch_size=spec.space.batch_size,
            cpus_per_trial=spec.resources.cpus_per_trial,
            diagnostics=diagnostics_of(spec),
        )
        from search.trainable import tune_trainable

        fn = trainable if trainable is not None else tune_trainable
        tune_fn = tune.with_resources(
            tune.with_parameters(fn, context=context),
            {"cpu": spec.resources.cpus_per_trial, "gpu": spec.resources.gpus_per_trial},
        )
        ok = True
        _quiet_tune()
        if sum(remaining.values()) > 0:
            tuner = tune.Tuner(
                tune_fn,
                tune_config=tune.TuneConfig(
                    search_alg=searcher,
                    num_samples=-1,
                    max_concurrent_trials=slots,
                    # Across nodes, Tune hands a pending cohort to a freed cached actor and
                    # kills the one it was starting elsewhere: cohorts shorter than an
                    # actor's start-up then all pile onto the first node. Reuse on one node.
                    reuse_actors=capacity.nodes <= 1,
                    trial_name_creator=_trial_name,
                    trial_dirname_creator=_trial_name,
                ),
                run_config=tune.RunConfig(
                    name=spec.search_id,
                    storage_path=str(state / "tune"),
                    verbose=0,
                    failure_config=tune.FailureConfig(max_failures=2),
                    log_to_file=False,
                ),
            )
            tuner.fit()
        tracker.drain()
        timings["tracking_drained"] = time.time()
        timings["driver_seconds"] = dict(searcher.driver_seconds)
        timings["mlflow_writer_seconds"] = tracker.writer_seconds
        # Science after the search: lr probes and the convergence map (search.science).
        from search.science import log_convergence_map, run_probes

        ranked = leaderboard_of(spec, tracker.experiment_id, tracking_uri)
        probes = run_probes(spec, data, ranked, context.convergence)
        runs = trial_runs_of(tracker.experiment_id, spec.search_id, tracking_uri)
        log_convergence_map(tracker.client, parent, spec, runs, probes)
        timings["science_done"] = time.time()
        # Leaderboard files, plots, summary runs; the parent is marked finished last.
        board = publish(tracker, spec, tracking_uri, ok=ok)
        if out is not None:
            print(f"\nleaderboard of {spec.search_id} (parent run {parent}):", file=out)
            print(render(board, "table"), file=out, end="")
        timings["end"] = time.time()
        return SearchOutcome(spec.search_id, tracker.experiment_id, parent, board, timings=timings)
    finally:
        os.umask(umask)
        if started_ray:
            import ray

            ray.shutdown()
