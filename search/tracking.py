"""MLflow adapter: the parent run of a search, one child run per trial, leaderboard files.

All writes come from the driver through one writer thread, so parallel trials never race
on a SQLite store and the Tune event loop never waits on the tracking server. Child runs
are keyed by a deterministic trial key (tag ``actsweep.trial_key``): a key already in MLflow
is never logged twice, which is what makes resuming a search safe. Every cohort the writer
takes is already in the search's spool (search.spool): a failed write is retried, never
fatal, and a resume closes the runs a dead driver left open (`reconcile`) and logs the rest.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import tempfile
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import mlflow
import pandas as pd
from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from models.initializers import resolve_init
from search.paths import artifact_root
from search.searcher import CohortOutcome, MemberOutcome, seed_runs
from search.spec import SearchSpec
from search.spool import Spool
from search.stats import aggregate_trial
from search.trial_metrics import trial_metrics

TAG_ROLE = "actsweep.role"
TAG_SEARCH_ID = "actsweep.search_id"
TAG_SEARCH_NAME = "actsweep.search"
TAG_TRIAL_KEY = "actsweep.trial_key"
TAG_SPEC_HASH = "actsweep.spec_hash"
TAG_STATE = "actsweep.state"
TAG_NODE = "actsweep.node"
TAG_NODE_IP = "actsweep.node_ip"
TAG_NODE_ID = "actsweep.node_id"
"""The Ray node id: unlike hostname and IP, distinct for every node, even on one machine."""
TAG_DEVICE = "actsweep.device"
TAG_COHORT = "actsweep.cohort"
TAG_OPTUNA_STORAGE = "actsweep.optuna_storage"
TAG_ACTIVATION = "activation"
PARENT_TAG = "mlflow.parentRunId"

ROLE_SEARCH = "search"
ROLE_TRIAL = "trial"

_BATCH = 1000  # MLflow's limit on metrics per log_batch call

OPEN_STATUSES = ("RUNNING", "SCHEDULED")
RETRY_WINDOW_ENV = "ACTSWEEP_MLFLOW_RETRY_WINDOW_S"
RETRY_WINDOW_S = 120.0
"""How long the end of a search keeps retrying MLflow for results still spooled before it
gives up and leaves them for `actsweep sync` (during the search it retries without end)."""
_BACKOFF_MAX_S = 10.0  # on top of the client's own retries (search.remote)


def retry_window() -> float:
    raw = os.environ.get(RETRY_WINDOW_ENV, "")
    try:
        return max(0.0, float(raw)) if raw else RETRY_WINDOW_S
    except ValueError:
        return RETRY_WINDOW_S


def redact(url: str) -> str:
    """A storage URL without its password (tags are readable by everyone with the store)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def trial_key(search_id: str, activation: str, number: int) -> str:
    return f"{search_id}/{activation}/{number}"


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


@dataclass(frozen=True)
class SearchRun:
    experiment_id: str
    run_id: str
    state: str
    """Our own lifecycle tag: running | finished | failed."""


def ensure_experiment(client: MlflowClient, name: str, tracking_uri: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return str(exp.experiment_id)
    root = artifact_root(tracking_uri)
    location = f"{root}/{name}" if root else None
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except MlflowException:
        # Lost a creation race with another search: use theirs.
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return str(exp.experiment_id)


def find_search_run(client: MlflowClient, experiment_id: str, search_id: str) -> SearchRun | None:
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_ROLE}` = '{ROLE_SEARCH}' and tags.`{TAG_SEARCH_ID}` = '{search_id}'",
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    if not runs:
        return None
    run = runs[0]
    return SearchRun(experiment_id, run.info.run_id, run.data.tags.get(TAG_STATE, "running"))


def runs_tagged(client: MlflowClient, experiment_id: str, tags: dict[str, str]) -> list[str]:
    """Ids of the active runs carrying every tag in `tags`, oldest first."""
    clauses = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = client.search_runs(
        [experiment_id], filter_string=clauses, order_by=["attributes.start_time ASC"]
    )
    return [r.info.run_id for r in runs]


def create_run_once(
    client: MlflowClient,
    experiment_id: str,
    key: dict[str, str],
    tags: dict[str, str],
    run_name: str,
    start_time: int | None = None,
    remote: bool = True,
) -> str:
    """Create the run identified by the tags `key`, leaving exactly one active run with them.

    MLflow's HTTP client retries a POST whose answer was lost, and by then the server may
    have created the run: one call can leave two runs. So after a failed call we look the
    run up by its key before creating again, and after a successful one we delete any twin
    (keeping the run we were answered with). `key` must identify the run uniquely.
    A local store (`remote=False`: SQLite, files) has no lost answers, and the twin lookup
    would cost a query per run that grows with the experiment, so it is skipped there.
    """
    try:
        run_id = client.create_run(
            experiment_id, start_time=start_time, tags=tags, run_name=run_name
        ).info.run_id
    except MlflowException:
        found = runs_tagged(client, experiment_id, key)
        if not found:
            found = [
                client.create_run(
                    experiment_id, start_time=start_time, tags=tags, run_name=run_name
                ).info.run_id
            ]
        run_id = found[0]
    if remote:
        for twin in runs_tagged(client, experiment_id, key):
            if twin != run_id:
                close_run(client, twin)
    return run_id


def close_run(client: MlflowClient, run_id: str) -> None:
    """Retire a run that will not be completed: KILLED (never left RUNNING), then deleted."""
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))
    client.delete_run(run_id)


def trial_runs_by_key(
    client: MlflowClient, experiment_id: str, search_id: str
) -> dict[str, list[Any]]:
    """Every active child run of a search, grouped by trial key (oldest first)."""
    by_key: dict[str, list[Any]] = defaultdict(list)
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{TAG_ROLE}` = '{ROLE_TRIAL}' and tags.`{TAG_SEARCH_ID}` = '{search_id}'",
            max_results=5000,
            order_by=["attributes.start_time ASC"],
            page_token=token,
        )
        for r in page:
            if TAG_TRIAL_KEY in r.data.tags:
                by_key[r.data.tags[TAG_TRIAL_KEY]].append(r)
        token = page.token
        if not token:
            return dict(by_key)


@dataclass(frozen=True)
class Reconciled:
    logged: set[str]
    """Trial keys with a terminated child run: never logged again."""
    closed: int
    """Open child runs (a driver died while logging them) marked KILLED and deleted."""
    kept_killed: int
    """Open child runs with no spooled result to redo them from: KILLED, kept visible."""
    best: dict[str, int]
    """Fewest steps to target per activation among the logged trials."""


def reconcile(
    client: MlflowClient, experiment_id: str, search_id: str, spooled: set[str]
) -> Reconciled:
    """Close the child runs a dead driver left open, so each trial ends with one terminated run.

    A run is left RUNNING by a driver that died between creating it and terminating it. If
    the trial also has a terminated run (a twin), or its result is still spooled (it will be
    logged again, whole), the open run is KILLED and deleted. Otherwise the open run holds
    all there is of the trial: it is KILLED and kept (this needs a spool lost by hand).
    """
    logged: set[str] = set()
    closed = kept = 0
    best: dict[str, int] = {}
    for key, runs in trial_runs_by_key(client, experiment_id, search_id).items():
        done = [r for r in runs if r.info.status not in OPEN_STATUSES]
        for r in runs:
            if r.info.status not in OPEN_STATUSES:
                continue
            if done or key in spooled:
                close_run(client, r.info.run_id)
                closed += 1
            else:
                client.set_terminated(r.info.run_id, RunStatus.to_string(RunStatus.KILLED))
                kept += 1
        if done or key not in spooled:
            logged.add(key)
        for r in done:
            m = r.data.metrics
            act = r.data.tags.get(TAG_ACTIVATION)
            if act and m.get("reached") == 1.0 and "steps_to_target" in m:
                steps = int(m["steps_to_target"])
                best[act] = min(best.get(act, steps), steps)
    return Reconciled(logged, closed, kept, best)


def child_run_payload(
    spec: SearchSpec, search_id: str, outcome: CohortOutcome, member: MemberOutcome
) -> tuple[list[Param], list[Metric], dict[str, str], float, float]:
    """Params, metrics, tags and (start, end) seconds of one trial's child run (pure)."""
    p = member.params
    params = {
        "activation": p.activation,
        "depth": p.depth,
        "init": p.init,
        "lr": repr(p.lr),
        "optimizer": p.optimizer,
        "width": spec.model.width,
        "momentum": spec.space.momentum,
        "batch_size": spec.space.batch_size,
        "dataset": spec.dataset.name,
        "seed": member.seed,
        "optuna_trial": p.number,
        "optuna_study": outcome.study,
        "target_loss": spec.convergence.target_loss,
        "target_accuracy": spec.convergence.target_accuracy,
        "max_steps": spec.convergence.max_steps,
        "eval_every": spec.convergence.eval_every,
    }
    report = outcome.report
    tags = {
        TAG_ROLE: ROLE_TRIAL,
        TAG_SEARCH_ID: search_id,
        TAG_SEARCH_NAME: spec.name,
        TAG_TRIAL_KEY: trial_key(search_id, p.activation, p.number),
        TAG_ACTIVATION: p.activation,
        TAG_COHORT: outcome.tune_trial_id,
        "mlflow.runName": f"{p.activation}-d{p.depth}-{p.number:04d}",
    }
    for tag, key in (
        (TAG_NODE, "hostname"),
        (TAG_NODE_IP, "node_ip"),
        (TAG_NODE_ID, "node_id"),
        (TAG_DEVICE, "device"),
    ):
        if key in report:
            tags[tag] = str(report[key])
    metrics: list[Metric] = []
    start = float(report.get("started_at", time.time()))
    end = float(report.get("ended_at", start))
    res = member.result
    if res is not None:
        runs = list(member.runs) or [res]
        end = start + max(float(r["wall_seconds"]) for r in runs)
        t_ms = _ms(end)
        params["init_resolved"] = resolve_init(p.init, p.activation)
        params["seeds"] = len(runs)
        params["run_seeds"] = ",".join(str(s) for s in (member.seeds or (member.seed,)))
        # Aggregate over paired seeds, each seed's outcome, curves: search.trial_metrics.
        aggregate = (
            dataclasses.asdict(member.aggregate)
            if member.aggregate is not None
            else dataclasses.asdict(aggregate_trial(seed_runs(runs, spec.convergence.max_steps)))
        )
        summary, curves = trial_metrics(runs, aggregate, member.value)
        metrics += [Metric(k, v, t_ms, step) for k, step, v in curves]
        metrics += [Metric(k, v, t_ms, 0) for k, v in summary.items()]
    param_list = [Param(k, "null" if v is None else str(v)) for k, v in params.items()]
    return param_list, metrics, tags, start, end


class Tracker:
    """Owns every MLflow write of one search.

    With a spool (search.spool), MLflow being away never fails the search: cohorts stay
    spooled, the writer retries with backoff, and `drain` reports what is still spooled.
    """

    def __init__(
        self,
        tracking_uri: str,
        spec: SearchSpec,
        spool: Spool | None = None,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.spec = spec
        self.search_id = spec.search_id
        self.client = MlflowClient(tracking_uri)
        self.experiment_id = ""
        self.parent_run_id = ""
        self.spool = spool
        self._notify = notify or (lambda line: None)
        self._logged: set[str] = set()
        self._queue: queue.Queue[CohortOutcome | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._window = RETRY_WINDOW_S
        self.last_error: BaseException | None = None
        """The latest MLflow failure the writer rode out (spooled mode)."""
        self.child_runs_logged = 0
        self.reconciled: Reconciled | None = None
        """What `start` found and fixed when resuming (None for a new search)."""
        self.replayed = 0
        """Spooled cohorts handed to the writer by `start`."""
        self.remote = urlsplit(tracking_uri).scheme in ("http", "https")
        self.writer_seconds = 0.0
        """Time the writer thread spent in MLflow calls (off the driver's critical path)."""

    # --- lifecycle ----------------------------------------------------------------------

    def existing(self) -> SearchRun | None:
        exp = self.client.get_experiment_by_name(self.spec.experiment_name)
        if exp is None:
            return None
        return find_search_run(self.client, str(exp.experiment_id), self.search_id)

    def start(self, spec_text: str | None = None, tags: dict[str, str] | None = None) -> str:
        """Create (or reopen, when resuming) the parent run; start the writer thread.

        Resuming also closes child runs a dead driver left open and queues every spooled
        cohort whose trials are not in MLflow yet (`reconcile`, search.spool).
        """
        self.experiment_id = ensure_experiment(
            self.client, self.spec.experiment_name, self.tracking_uri
        )
        found = find_search_run(self.client, self.experiment_id, self.search_id)
        spooled = self.spool.entries() if self.spool is not None else []
        if found is None:
            self.parent_run_id = create_run_once(
                self.client,
                self.experiment_id,
                {TAG_ROLE: ROLE_SEARCH, TAG_SEARCH_ID: self.search_id},
                run_name=self.search_id,
                tags={
                    TAG_ROLE: ROLE_SEARCH,
                    TAG_SEARCH_ID: self.search_id,
                    TAG_SEARCH_NAME: self.spec.name,
                    TAG_SPEC_HASH: self.spec.spec_hash(),
                    TAG_STATE: "running",
                    **(tags or {}),
                },
            )
            params = [Param(k, v[:6000]) for k, v in self.spec.flat_params().items()]
            for i in range(0, len(params), 100):
                self.client.log_batch(self.parent_run_id, params=params[i : i + 100])
            self._log_text("spec.json", json.dumps(self.spec.model_dump(mode="json"), indent=2))
            if spec_text is not None:
                self._log_text("spec.yaml", spec_text)
        else:
            self.parent_run_id = found.run_id
            self.client.set_tag(self.parent_run_id, TAG_STATE, "running")
            self.client.update_run(self.parent_run_id, status="RUNNING")
        if found is not None or spooled:
            keys = {
                trial_key(self.search_id, m.params.activation, m.params.number)
                for outcome in spooled
                for m in outcome.members
            }
            self.reconciled = reconcile(self.client, self.experiment_id, self.search_id, keys)
            self._logged = set(self.reconciled.logged)
        self._thread = threading.Thread(target=self._writer, name="actsweep-mlflow", daemon=True)
        self._thread.start()
        for outcome in spooled:
            self._queue.put(outcome)
        self.replayed = len(spooled)
        return self.parent_run_id

    def record(self, outcome: CohortOutcome) -> None:
        """Queue a finished cohort for logging (never blocks the caller on MLflow)."""
        self._queue.put(outcome)

    def drain(self, window: float | None = None) -> int:
        """Wait until every queued trial is in MLflow; return how many are only spooled.

        With a spool, MLflow failures are retried for `window` seconds (default
        `retry_window()`) after the call, then given up: the trials stay in the spool and
        their count is returned. Without one, a writer failure is re-raised.
        """
        self._window = retry_window() if window is None else window
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise self._error
        if self.spool is None:
            return 0
        # Counted by trial: a cohort cut off halfway has some of its trials in MLflow.
        return sum(
            trial_key(self.search_id, m.params.activation, m.params.number) not in self._logged
            for outcome in self.spool.entries()
            for m in outcome.members
        )

    def suspend(self) -> None:
        """No driver is running the unfinished search any more: say so instead of RUNNING."""
        self.client.set_tag(self.parent_run_id, TAG_STATE, "interrupted")
        self.client.set_terminated(self.parent_run_id, RunStatus.to_string(RunStatus.KILLED))

    def finish(self, files: Mapping[str, str | bytes], ok: bool = True) -> None:
        for name, text in files.items():
            self._log_text(name, text)
        self.client.set_tag(self.parent_run_id, TAG_STATE, "finished" if ok else "failed")
        self.client.set_terminated(
            self.parent_run_id, RunStatus.to_string(RunStatus.FINISHED if ok else RunStatus.FAILED)
        )

    # --- writing ------------------------------------------------------------------------

    def _log_text(self, name: str, text: str | bytes) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            if isinstance(text, bytes):
                path.write_bytes(text)  # plots (PNG)
            else:
                path.write_text(text)
            self.client.log_artifact(self.parent_run_id, str(path))

    def _writer(self) -> None:
        if self.spool is None:
            self._writer_unspooled()
            return
        # Cohorts are taken in order; one that MLflow refuses stays at the head (and in the
        # spool) and is retried with backoff while new ones queue up behind it. Each try is
        # bounded by the client's own retries (search.remote), so this never hangs.
        backlog: deque[CohortOutcome] = deque()
        stopping = False
        deadline = 0.0
        retry_at = 0.0
        delay = 0.0
        failing = False
        while True:
            if not backlog and stopping:
                return
            now = time.monotonic()
            if not backlog:
                wait: float | None = None
            elif stopping:
                wait = max(0.0, min(retry_at, deadline) - now)
            else:
                wait = max(0.0, retry_at - now)
            try:
                item = self._queue.get(timeout=wait) if wait != 0.0 else self._queue.get_nowait()
            except queue.Empty:
                pass
            else:
                if item is None:
                    stopping = True
                    deadline = time.monotonic() + self._window
                else:
                    backlog.append(item)
                continue  # take everything already queued before the next try
            if time.monotonic() < retry_at:
                if stopping and time.monotonic() >= deadline:
                    return
                continue
            outcome = backlog[0]
            t0 = time.perf_counter()
            try:
                self._log_cohort(outcome, retry=failing)
            except Exception as err:
                self.last_error = err
                if not failing:
                    self._notify(
                        f"MLflow at {self.tracking_uri} failed ({brief_error(err)}); results stay "
                        f"spooled in {self.spool.path} and are uploaded when it answers again"
                    )
                failing = True
                delay = min(_BACKOFF_MAX_S, max(1.0, 2 * delay))
                retry_at = time.monotonic() + delay
                if stopping and time.monotonic() >= deadline:
                    return
            else:
                backlog.popleft()
                self.spool.done(outcome)
                if failing:
                    self._notify(f"MLflow at {self.tracking_uri} answers again; uploading")
                failing = False
                delay = retry_at = 0.0
            self.writer_seconds += time.perf_counter() - t0

    def _writer_unspooled(self) -> None:
        while True:
            outcome = self._queue.get()
            if outcome is None:
                return
            if self._error is not None:
                continue  # keep draining so the producer never blocks
            t0 = time.perf_counter()
            try:
                self._log_cohort(outcome)
            except BaseException as err:  # surfaced by drain()
                self._error = err
            self.writer_seconds += time.perf_counter() - t0

    def _log_cohort(self, outcome: CohortOutcome, retry: bool = False) -> None:
        for member in outcome.members:
            key = trial_key(self.search_id, member.params.activation, member.params.number)
            if key in self._logged:
                continue
            if retry:
                # An earlier try may have created the run and died before terminating it.
                for run_id in runs_tagged(
                    self.client, self.experiment_id, {TAG_ROLE: ROLE_TRIAL, TAG_TRIAL_KEY: key}
                ):
                    close_run(self.client, run_id)
            self._log_member(outcome, member)
            self._logged.add(key)
            self.child_runs_logged += 1

    def _log_member(self, outcome: CohortOutcome, member: MemberOutcome) -> None:
        params, metrics, tags, start, end = child_run_payload(
            self.spec, self.search_id, outcome, member
        )
        tags[PARENT_TAG] = self.parent_run_id
        run_id = create_run_once(
            self.client,
            self.experiment_id,
            {TAG_ROLE: ROLE_TRIAL, TAG_TRIAL_KEY: tags[TAG_TRIAL_KEY]},
            tags=tags,
            run_name=tags["mlflow.runName"],
            start_time=_ms(start),
            remote=self.remote,
        )
        # One batch holds params and the first metrics: every call is a store transaction.
        head = _BATCH - len(params)
        self.client.log_batch(run_id, params=params, metrics=metrics[:head])
        for i in range(head, len(metrics), _BATCH):
            self.client.log_batch(run_id, metrics=metrics[i : i + _BATCH])
        status = RunStatus.FAILED if member.result is None else RunStatus.FINISHED
        self.client.set_terminated(run_id, RunStatus.to_string(status), end_time=_ms(end))


def brief_error(err: BaseException) -> str:
    """A failure in a few words, for one line to the user (MLflow's own text of a refused
    connection is several hundred characters of urllib3 internals)."""
    text = " ".join(str(err).split()) or type(err).__name__
    for cause, said in (
        ("Connection refused", "connection refused"),
        ("timed out", "timed out"),
        ("Max retries exceeded", "no answer after retries"),
    ):
        if cause in text:
            return said
    return text if len(text) <= 160 else text[:157] + "..."


# --- reading (for leaderboards; plain MLflow queries) ------------------------------------


def search_runs_of(experiment_id: str, tracking_uri: str) -> pd.DataFrame:
    """Every search (parent run) of the experiment, newest first."""
    mlflow.set_tracking_uri(tracking_uri)
    df = mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=f"tags.`{TAG_ROLE}` = '{ROLE_SEARCH}'",
        order_by=["attributes.start_time DESC"],
    )
    assert isinstance(df, pd.DataFrame)
    return df


def trial_runs_of(experiment_id: str, search_id: str, tracking_uri: str) -> pd.DataFrame:
    """Child runs of one search, exactly as `mlflow.search_runs` returns them."""
    mlflow.set_tracking_uri(tracking_uri)
    df = mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=f"tags.`{TAG_ROLE}` = '{ROLE_TRIAL}' and tags.`{TAG_SEARCH_ID}` = '{search_id}'",
    )
    assert isinstance(df, pd.DataFrame)
    return df
