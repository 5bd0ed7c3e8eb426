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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import optuna
import pandas as pd
from ray import tune

from models.convergence import Convergence
from search.capacity import Capacity, cluster_shapes, plan_capacity
from search.errors import SpecError
from search.leaderboard import compute_leaderboard, render, trials_table
from search.paths import check_private, check_private_tree, private_file, sqlite_path, state_dir
from search.pool import make_sampler, pooled_study
from search.progress import Progress
from search.remote import bound_client_retries, is_remote
from search.searcher import CohortOutcome, CohortSearcher
from search.space import study_name
from search.spec import SearchSpec
from search.spool import Spool, search_lock, spool_dir, spooled_values
from search.summary import publish
from search.tracking import TAG_OPTUNA_STORAGE, Tracker, brief_error, redact, trial_runs_of
from search.trainable import WorkerContext

if TYPE_CHECKING:
    from models.datasets import Dataset
    from models.diagnostics import DiagnosticsConfig

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
    spooled: int = 0
    """Trials whose results are only in the local spool (MLflow did not take them): the
    search is not finished, `actsweep sync` or running it again uploads and finishes it."""
    spool_path: str = ""
    last_error: str = ""
    """The MLflow failure that left trials spooled."""
    uploaded: int = 0
    """Child runs logged by this call (for `actsweep sync`)."""
    remaining: int = 0
    """Trials of the budget still to run (`actsweep sync` of an interrupted search)."""


def convergence_of(spec: SearchSpec) -> Convergence:
    c = spec.convergence
    return Convergence(
        target_loss=c.target_loss,
        target_accuracy=c.target_accuracy,
        max_steps=c.max_steps,
        eval_every=c.eval_every,
        divergence_factor=c.divergence_factor,
    )


def worker_context(spec: SearchSpec, data: Dataset) -> WorkerContext:
    """What every worker of this search needs besides its cohort."""
    return WorkerContext(
        data=data,
        convergence=convergence_of(spec),
        width=spec.model.width,
        momentum=spec.space.momentum,
        batch_size=spec.space.batch_size,
        cpus_per_trial=spec.resources.cpus_per_trial,
        diagnostics=diagnostics_of(spec),
    )


def diagnostics_of(spec: SearchSpec) -> DiagnosticsConfig | None:
    from models.diagnostics import DiagnosticsConfig

    d = spec.diagnostics
    if not d.enabled:
        return None
    return DiagnosticsConfig(
        every=d.every,
        probe_size=d.probe_size,
        sharpness=d.sharpness,
        sharpness_iters=d.sharpness_iters,
    )


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
    spec: SearchSpec,
    storage: optuna.storages.BaseStorage,
    spooled: dict[str, dict[int, float | None]] | None = None,
) -> tuple[dict[str, optuna.Study], dict[str, int]]:
    """One study per activation, named after the search; the budget each still has.

    `spooled` (search.spool.spooled_values) holds results a dead driver wrote to its spool
    but never told Optuna: those RUNNING trials are told them instead of being failed.
    """
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
        safe = (spooled or {}).get(act, {})
        for t in study.get_trials(deepcopy=False):
            if t.state == optuna.trial.TrialState.RUNNING:
                value = safe.get(t.number)
                if value is not None:
                    study.tell(t.number, value)  # spooled, then the driver died: not lost
                    done += 1
                else:
                    # Asked by a driver that died before telling: its result never arrived
                    # (or it was a failed cohort's, spooled as a failure).
                    study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            elif t.state == optuna.trial.TrialState.COMPLETE:
                done += 1
        studies[act] = study
        remaining[act] = max(0, spec.budget.trials_per_activation - done)
    return studies, remaining


def _fresh_sqlite(tracking_uri: str) -> bool:
    db = sqlite_path(tracking_uri)
    return db is not None and not db.exists()


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


class _TrialStartMark(tune.Callback):
    """Records when the first trial's actor is up (Tune's on_trial_start), for benchmarks."""

    def __init__(self, marks: dict[str, float], driver_cpu: dict[str, float]) -> None:
        self.marks = marks
        self.driver_cpu = driver_cpu

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        if "first_trial_start" not in self.marks:
            self.marks["first_trial_start"] = time.time()
            self.driver_cpu["first_trial_start"] = time.process_time()


def leaderboard_of(spec: SearchSpec, experiment_id: str, tracking_uri: str) -> pd.DataFrame:
    runs = trial_runs_of(experiment_id, spec.search_id, tracking_uri)
    return compute_leaderboard(trials_table(runs), spec.space.activations)


def _warn(line: str) -> None:
    print(f"actsweep: warning: {line}", file=sys.stderr, flush=True)


def _seed_best(tracker: Tracker, entries: list[CohortOutcome]) -> dict[str, int]:
    """The early-stopping bar a resumed search starts from: its earlier trials' best."""
    best = dict(tracker.reconciled.best) if tracker.reconciled is not None else {}
    for outcome in entries:
        for m in outcome.members:
            agg = m.aggregate
            if agg is not None and agg.reached:
                act, steps = m.params.activation, int(agg.steps_to_target)
                best[act] = min(best.get(act, steps), steps)
    return best


def _spooled_outcome(spec: SearchSpec, tracker: Tracker, spooled: int, **kw: Any) -> SearchOutcome:
    err = tracker.last_error
    return SearchOutcome(
        spec.search_id,
        tracker.experiment_id,
        tracker.parent_run_id,
        pd.DataFrame(),
        spooled=spooled,
        spool_path=str(tracker.spool.path) if tracker.spool is not None else "",
        last_error="" if err is None else brief_error(err),
        uploaded=tracker.child_runs_logged,
        **kw,
    )


def _finish(
    spec: SearchSpec,
    tracker: Tracker,
    tracking_uri: str,
    data: Dataset | None,
    timings: dict[str, Any],
    ok: bool = True,
) -> pd.DataFrame:
    """Science after the search (lr probes, convergence map), then publish: the parent
    run is marked finished last (failed when `ok` is false: budget lost to failing cohorts),
    so an interruption anywhere here is resumed."""
    from models.datasets import load_dataset
    from search.science import log_convergence_map, run_probes

    if data is None and spec.lr_probe.enabled:
        data = load_dataset(spec.dataset.name, spec.seed, spec.dataset.validation_fraction)
    ranked = leaderboard_of(spec, tracker.experiment_id, tracking_uri)
    probes = run_probes(spec, data, ranked, convergence_of(spec)) if data is not None else {}
    runs = trial_runs_of(tracker.experiment_id, spec.search_id, tracking_uri)
    log_convergence_map(tracker.client, tracker.parent_run_id, spec, runs, probes)
    timings["science_done"] = time.time()
    board = publish(tracker, spec, tracking_uri, ok=ok)
    if tracker.spool is not None:
        tracker.spool.remove_if_empty()
    return board


def check_state(spec: SearchSpec, tracking_uri: str, optuna_storage_location: str | None) -> None:
    """Refuse state another user could have written (SpecError, exit 2), before anything is
    written, the lock file included: resuming replays the journal and the spool and unpickles
    Tune's experiment files (search.paths.check_private)."""
    state = state_dir(tracking_uri)
    check_private(state / "tune")
    check_private_tree(state / "tune" / spec.search_id)
    check_private(state / "spool")
    check_private_tree(spool_dir(tracking_uri, spec.search_id))
    location = optuna_location(spec, tracking_uri, optuna_storage_location)
    if "://" not in location:
        check_private(Path(location).expanduser(), "optuna storage")


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
    One driver per search and machine: a second one is refused (search.spool.search_lock).
    """
    check_state(spec, tracking_uri, optuna_storage_location)
    with search_lock(tracking_uri, spec.search_id):
        return _run_search(
            spec,
            tracking_uri=tracking_uri,
            address=address,
            optuna_storage_location=optuna_storage_location,
            spec_text=spec_text,
            out=out,
            trainable=trainable,
        )


def _run_search(
    spec: SearchSpec,
    *,
    tracking_uri: str,
    address: str | None = None,
    optuna_storage_location: str | None = None,
    spec_text: str | None = None,
    out: TextIO | None = sys.stdout,
    trainable: Callable[..., None] | None = None,
) -> SearchOutcome:
    if is_remote(tracking_uri):
        bound_client_retries()  # an unreachable server must fail, not hang (search.remote)
    marks: dict[str, float] = {"run_search": time.time()}
    state = state_dir(tracking_uri)  # checked in run_search, before the lock
    location = optuna_location(spec, tracking_uri, optuna_storage_location)
    storage = optuna_storage(location)
    spool = Spool(spool_dir(tracking_uri, spec.search_id))
    # A SQLite file that does not exist yet holds no finished search: creating it (MLflow's
    # schema migrations, seconds) then overlaps with Ray's start below instead of preceding it.
    fresh = _fresh_sqlite(tracking_uri)
    tracker = None if fresh else Tracker(tracking_uri, spec, spool=spool, notify=_warn)
    found = None if tracker is None else tracker.existing()
    marks["tracking_found"] = time.time()
    if found is not None and found.state == "finished" and not spool.files():
        board = leaderboard_of(spec, found.experiment_id, tracking_uri)
        if out is not None:
            print(
                f"search {spec.search_id} already finished in experiment "
                f"'{spec.experiment_name}' (change `seed` or `name` to run a new one).",
                file=out,
            )
            print(render(board, "table"), file=out, end="")
        return SearchOutcome(spec.search_id, found.experiment_id, found.run_id, board, True)

    entries = spool.entries()

    def prepare() -> tuple[Tracker, dict[str, optuna.Study], dict[str, int], Dataset]:
        made = tracker or Tracker(
            tracking_uri, spec, spool=spool, notify=_warn
        )  # creates the store
        studies, remaining = open_studies(spec, storage, spooled_values(entries))
        marks["studies_ready"] = time.time()
        from models.datasets import load_dataset

        data = load_dataset(spec.dataset.name, spec.seed, spec.dataset.validation_fraction)
        marks["data_ready"] = time.time()
        return made, studies, remaining, data

    # Everything the search creates from here (Tune's experiment files, Ray's session files,
    # MLflow's local store and artifact directories) is private to the user, whatever their
    # umask: with a group-writable umask (002) Tune's own files would otherwise be refused on
    # the next resume.
    umask = os.umask(0o077)
    # The store, the studies and the dataset get ready while Ray starts (mostly waiting on
    # its processes), in a helper thread; Ray stays in the main thread.
    with ThreadPoolExecutor(1, thread_name_prefix="actsweep-prepare") as pool:
        prepared = pool.submit(prepare)
        started_ray = _start_ray(address)
        marks["ray_ready"] = time.time()
        try:
            tracker, studies, remaining, data = prepared.result()
        except BaseException:
            os.umask(umask)
            if started_ray:
                import ray

                ray.shutdown()
            raise
    try:
        capacity = _check_resources(spec)
        slots = capacity.slots
        parent = tracker.start(spec_text, {TAG_OPTUNA_STORAGE: redact(location)})
        marks["tracking_ready"] = time.time()
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

        # driver_cpu: the driver process's CPU seconds (all its threads) at those marks.
        timings: dict[str, Any] = {"workers": {}, "marks": marks, "driver_cpu": {}}

        def on_cohort_done(outcome: CohortOutcome) -> None:
            tracker.record(outcome)
            progress.update(outcome)
            timings["last_finished"] = time.time()
            timings["driver_cpu"]["last_finished"] = time.process_time()
            timings.setdefault("completions", []).append((progress.done, time.time()))
            rep = outcome.report
            if "worker_pid" in rep:
                w = timings["workers"].setdefault(
                    f"{rep.get('node_id', '')}:{rep['worker_pid']}", {"train_cpu": 0.0}
                )
                w["train_cpu"] += rep["train_cpu"]
                w["worker_cpu"] = max(w.get("worker_cpu", 0.0), rep["worker_cpu"])
                w["worker_rss_mb"] = max(w.get("worker_rss_mb", 0.0), rep["worker_rss_mb"])
                if "worker_cpu_at_entry" in rep:
                    # The CPU a worker spent before its first cohort: process and import start-up.
                    first = w.get("cpu_before_first_cohort", rep["worker_cpu_at_entry"])
                    w["cpu_before_first_cohort"] = min(first, rep["worker_cpu_at_entry"])

        def on_first_submit() -> None:
            timings.setdefault("first_submit", time.time())

        searcher = CohortSearcher(
            spec=spec,
            studies=studies,
            remaining=remaining,
            on_cohort_done=on_cohort_done,
            on_suggest=on_first_submit,
            on_cohort_measured=spool.write,
            best=_seed_best(tracker, entries),
            pool=pooled_study(spec, studies) if spec.sampler.pooled else None,
            lookahead=True,
        )
        context = worker_context(spec, data)
        from search.trainable import tune_trainable

        fn = trainable if trainable is not None else tune_trainable
        tune_fn = tune.with_resources(
            tune.with_parameters(fn, context=context),
            {"cpu": spec.resources.cpus_per_trial, "gpu": spec.resources.gpus_per_trial},
        )
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
                    # A cohort reports once, when it is done: stop its trial on that report
                    # instead of asking the actor for another result only to learn that the
                    # function returned (one driver-worker round trip less per cohort).
                    stop={"training_iteration": 1},
                    callbacks=[_TrialStartMark(marks, timings["driver_cpu"])],
                    name=spec.search_id,
                    storage_path=str(state / "tune"),
                    verbose=0,
                    failure_config=tune.FailureConfig(max_failures=2),
                    log_to_file=False,
                ),
            )
            try:
                tuner.fit()
            finally:
                searcher.close()
        if searcher.lost and out is not None:
            # Cohorts that failed every attempt, past the re-asks: the search is short of
            # its budget, so its parent ends failed and running the command again resumes it.
            print(f"trials given up after repeated failures: {searcher.lost}", file=out)
        spooled = tracker.drain()
        timings["tracking_drained"] = time.time()
        timings["driver_seconds"] = dict(searcher.driver_seconds)
        timings["mlflow_writer_seconds"] = tracker.writer_seconds
        if spooled:
            # MLflow is away: nothing more can be published. The parent stays unfinished,
            # so `actsweep sync` (or this command again) uploads the spool and finishes.
            return _spooled_outcome(spec, tracker, spooled, timings=timings)
        board = _finish(spec, tracker, tracking_uri, data, timings, ok=not searcher.lost)
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


def sync_search(
    spec: SearchSpec,
    *,
    tracking_uri: str,
    optuna_storage_location: str | None = None,
    out: TextIO | None = sys.stdout,
) -> SearchOutcome:
    """Upload a search's spooled results to MLflow without training anything.

    What a resume does before it trains: spooled results a dead driver never told Optuna
    are told, open child runs are closed, spooled trials are logged. When the budget is then
    complete the search is finished too (convergence map, leaderboard, parent FINISHED);
    otherwise `actsweep run` continues it.
    """
    check_state(spec, tracking_uri, optuna_storage_location)
    with search_lock(tracking_uri, spec.search_id):
        if is_remote(tracking_uri):
            bound_client_retries()
        spool = Spool(spool_dir(tracking_uri, spec.search_id))
        tracker = Tracker(tracking_uri, spec, spool=spool, notify=_warn)
        found = tracker.existing()
        entries = spool.entries()
        if found is None and not entries:
            raise SpecError(
                "spec",
                f"search {spec.search_id} is neither in MLflow at {tracking_uri} nor spooled "
                f"in {spool.path}: nothing to sync",
            )
        if found is not None and found.state == "finished" and not entries:
            if out is not None:
                print(f"search {spec.search_id} is finished and nothing is spooled", file=out)
            board = leaderboard_of(spec, found.experiment_id, tracking_uri)
            return SearchOutcome(spec.search_id, found.experiment_id, found.run_id, board, True)
        location = optuna_location(spec, tracking_uri, optuna_storage_location)
        _, remaining = open_studies(spec, optuna_storage(location), spooled_values(entries))
        left = sum(remaining.values())
        tracker.start(tags={TAG_OPTUNA_STORAGE: redact(location)})
        spooled = tracker.drain()
        closed = tracker.reconciled.closed if tracker.reconciled is not None else 0
        if out is not None:
            print(
                f"sync {spec.search_id}: {tracker.child_runs_logged} trials uploaded from "
                f"{spool.path}, {closed} unfinished child runs closed",
                file=out,
                flush=True,
            )
        if spooled:
            return _spooled_outcome(spec, tracker, spooled, remaining=left)
        if left:
            tracker.suspend()
            if out is not None:
                print(f"{left} trials of the budget are still to run", file=out)
            return _spooled_outcome(spec, tracker, 0, remaining=left)
        board = _finish(spec, tracker, tracking_uri, None, {})
        if out is not None:
            print(
                f"\nleaderboard of {spec.search_id} (parent run {tracker.parent_run_id}):", file=out
            )
            print(render(board, "table"), file=out, end="")
        return SearchOutcome(
            spec.search_id,
            tracker.experiment_id,
            tracker.parent_run_id,
            board,
            uploaded=tracker.child_runs_logged,
        )
