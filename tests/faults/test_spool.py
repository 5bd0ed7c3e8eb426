"""Crash points between "a cohort finished" and "its trials are in MLflow", one by one.

Each test drives the real searcher (real Optuna journal, a cohort really trained in this
process), stops the driver's work at one point as a SIGKILL would, then runs what a resume
runs (`open_studies` with the spool, `Tracker.start`, `drain`) against a real SQLite MLflow
store, and checks the converged state: every measured trial COMPLETE in Optuna and exactly
one FINISHED child run in MLflow with the measured numbers, nothing RUNNING, the spool empty.
No Ray: these are fast.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import stat
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow.entities import Metric, RunStatus, ViewType
from mlflow.tracking import MlflowClient

from models.datasets import load_dataset
from search.cli import main
from search.errors import SpecError
from search.orchestrate import convergence_of, open_studies, optuna_storage
from search.searcher import CohortOutcome, CohortSearcher
from search.spec import SearchSpec, parse_spec
from search.spool import (
    Spool,
    outcome_from_json,
    outcome_to_json,
    search_lock,
    spool_dir,
    spooled_values,
)
from search.tracking import (
    PARENT_TAG,
    TAG_ROLE,
    TAG_SEARCH_ID,
    TAG_TRIAL_KEY,
    Tracker,
    child_run_payload,
    trial_key,
)
from search.trainable import WorkerContext, run_cohort
from tests.search.conftest import write_spec


class DriverDied(Exception):
    """Stands for the SIGKILL: the driver's work stops exactly here."""


_TRAINED: dict[str, dict[str, Any]] = {}


def _train(config: dict[str, Any], spec: SearchSpec) -> dict[str, Any]:
    """run_cohort, once per distinct cohort: training is deterministic, and every test's
    fresh study asks the same first cohort, so the tests share one training."""
    key = json.dumps(config, sort_keys=True) + spec.spec_hash()
    if key not in _TRAINED:
        _TRAINED[key] = run_cohort(config, _context(spec))
    return copy.deepcopy(_TRAINED[key])


def _context(spec: SearchSpec) -> WorkerContext:
    return WorkerContext(
        data=load_dataset(spec.dataset.name, spec.seed, spec.dataset.validation_fraction),
        convergence=convergence_of(spec),
        width=spec.model.width,
        momentum=spec.space.momentum,
        batch_size=spec.space.batch_size,
        cpus_per_trial=1,
    )


class Driver:
    """The driver side of one search, as `run_search` wires it, minus Ray."""

    def __init__(self, spec: SearchSpec, store: dict[str, str]) -> None:
        self.spec = spec
        self.uri = store["tracking_uri"]
        self.spool = Spool(spool_dir(self.uri, spec.search_id))
        self.storage = optuna_storage(store["optuna_storage"])
        self.studies, self.remaining = open_studies(
            spec, self.storage, spooled_values(self.spool.entries())
        )
        self.tracker = Tracker(self.uri, spec, spool=self.spool)

    def cohort(
        self,
        name: str,
        *,
        measured: Any = None,
        done: Any = None,
    ) -> CohortOutcome:
        """Ask, train and complete one cohort; `measured`/`done` replace the spool write and
        the hand-off to the MLflow writer (to stop the driver there)."""
        seen: list[CohortOutcome] = []
        write = measured or self.spool.write

        def on_measured(outcome: CohortOutcome) -> None:
            seen.append(outcome)
            write(outcome)

        def on_done(outcome: CohortOutcome) -> None:
            seen.append(outcome)
            (done or self.tracker.record)(outcome)

        searcher = CohortSearcher(
            spec=self.spec,
            studies=self.studies,
            remaining=self.remaining,
            on_cohort_done=on_done,
            on_cohort_measured=on_measured,
        )
        config = searcher.suggest(name)
        assert isinstance(config, dict)
        report = _train(config, self.spec)
        with contextlib.suppress(DriverDied):
            searcher.on_trial_complete(name, report)
        assert seen, "nothing measured"
        return seen[0]


def _resume(spec: SearchSpec, store: dict[str, str]) -> Driver:
    """What a resumed driver does before it trains anything."""
    driver = Driver(spec, store)
    driver.tracker.start()
    assert driver.tracker.drain() == 0
    return driver


def _check_converged(driver: Driver, measured: list[CohortOutcome]) -> dict[str, Any]:
    client = MlflowClient(driver.uri)
    exp = driver.tracker.experiment_id
    sid = driver.spec.search_id
    runs = client.search_runs([exp], f"tags.`{TAG_ROLE}` = 'trial'")
    keys = [r.data.tags[TAG_TRIAL_KEY] for r in runs]
    assert len(keys) == len(set(keys)), f"twins: {sorted(keys)}"
    assert all(r.info.status == "FINISHED" for r in runs)
    # (the parent stays RUNNING here: publishing it is the end of a search, not of a resume)
    open_runs = f"attributes.status = 'RUNNING' and tags.`{TAG_ROLE}` = 'trial'"
    assert not client.search_runs([exp], open_runs, ViewType.ALL)
    by_key = {r.data.tags[TAG_TRIAL_KEY]: r for r in runs}
    for outcome in measured:
        for m in outcome.members:
            act, number = m.params.activation, m.params.number
            run = by_key[trial_key(sid, act, number)]
            assert run.data.tags[PARENT_TAG] == driver.tracker.parent_run_id
            assert m.value is not None
            assert run.data.metrics["score"] == pytest.approx(m.value, rel=1e-12)
            trial = driver.studies[act].trials[number]
            assert trial.state == optuna.trial.TrialState.COMPLETE
            assert trial.value == pytest.approx(m.value, rel=1e-12)
            assert m.result is not None
            history = client.get_metric_history(run.info.run_id, "train/loss")
            assert sorted(h.step for h in history) == list(m.result["steps"])
    assert driver.spool.files() == []
    for study in driver.studies.values():
        assert optuna.trial.TrialState.RUNNING not in [t.state for t in study.trials]
    return by_key


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One SQLite store and journal for the module (creating a store costs seconds); each
    test has its own search (spec name), so experiments, studies and spools never mix."""
    root = tmp_path_factory.mktemp("spool")
    return {
        "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
        "optuna_storage": str(root / ".actsweep" / "optuna.journal"),
    }


@pytest.fixture
def store(shared_store: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.delenv("ACTSWEEP_HOME", raising=False)
    return shared_store


_NAMES = iter(range(1000))


@pytest.fixture
def spec(tiny_spec: dict[str, Any]) -> SearchSpec:
    tiny_spec["convergence"]["max_steps"] = 100
    tiny_spec["name"] = f"spool-{next(_NAMES)}"
    return parse_spec(tiny_spec)


def test_spool_round_trip_gives_mlflow_the_same_run(
    spec: SearchSpec, store: dict[str, str]
) -> None:
    driver = Driver(spec, store)
    outcome = driver.cohort("c1", done=lambda o: None)
    back = outcome_from_json(outcome_to_json(outcome))
    for a, b in zip(outcome.members, back.members, strict=True):
        assert child_run_payload(spec, spec.search_id, outcome, a) == child_run_payload(
            spec, spec.search_id, back, b
        )
    # private: the directory 0700, each entry 0600 (results may be sensitive)
    path = driver.spool.path
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    files = driver.spool.files()
    assert len(files) == 1 and stat.S_IMODE(files[0].stat().st_mode) == 0o600


def test_death_after_spooling_before_telling_optuna(
    spec: SearchSpec, store: dict[str, str]
) -> None:
    driver = Driver(spec, store)

    def spool_then_die(outcome: CohortOutcome) -> None:
        driver.spool.write(outcome)
        raise DriverDied

    outcome = driver.cohort("c1", measured=spool_then_die)
    act = outcome.members[0].params.activation
    states = {t.state for t in driver.studies[act].trials}
    assert states == {optuna.trial.TrialState.RUNNING}  # never told
    resumed = _resume(spec, store)
    # told from the spool, not failed: they count against the budget and are not retrained
    assert resumed.remaining[act] == spec.budget.trials_per_activation - len(outcome.members)
    _check_converged(resumed, [outcome])


def test_death_after_telling_optuna_before_mlflow(spec: SearchSpec, store: dict[str, str]) -> None:
    driver = Driver(spec, store)
    driver.tracker.start()
    outcome = driver.cohort("c1", done=lambda o: None)  # the writer never got it
    act = outcome.members[0].params.activation
    assert {t.state for t in driver.studies[act].trials} == {optuna.trial.TrialState.COMPLETE}
    resumed = _resume(spec, store)
    assert resumed.tracker.replayed == 1
    _check_converged(resumed, [outcome])


def test_death_while_logging_a_child_run(spec: SearchSpec, store: dict[str, str]) -> None:
    driver = Driver(spec, store)
    driver.tracker.start()
    outcome = driver.cohort("c1", done=lambda o: None)
    # The writer had created the first trial's run and logged part of it, then died.
    m = outcome.members[0]
    params, metrics, tags, start, _ = child_run_payload(spec, spec.search_id, outcome, m)
    client = driver.tracker.client
    tags[PARENT_TAG] = driver.tracker.parent_run_id
    orphan = client.create_run(driver.tracker.experiment_id, tags=tags).info.run_id
    client.log_batch(orphan, params=params, metrics=metrics[:5])
    resumed = _resume(spec, store)
    assert resumed.tracker.reconciled is not None and resumed.tracker.reconciled.closed == 1
    by_key = _check_converged(resumed, [outcome])
    assert orphan not in {r.info.run_id for r in by_key.values()}
    gone = client.get_run(orphan)
    assert gone.info.status == "KILLED" and gone.info.lifecycle_stage == "deleted"


def test_death_after_mlflow_before_the_spool_entry_is_dropped(
    spec: SearchSpec, store: dict[str, str]
) -> None:
    driver = Driver(spec, store)
    driver.tracker.start()
    outcome = driver.cohort("c1")
    assert driver.tracker.drain() == 0
    assert driver.spool.files() == []
    client = driver.tracker.client
    exp = driver.tracker.experiment_id
    before = {r.info.run_id for r in client.search_runs([exp], "tags.`actsweep.role` = 'trial'")}
    driver.spool.write(outcome)  # as if the writer died before deleting it
    resumed = _resume(spec, store)
    after = _check_converged(resumed, [outcome])
    assert resumed.tracker.child_runs_logged == 0  # nothing logged twice
    assert {r.info.run_id for r in after.values()} == before


def test_death_while_writing_the_spool_entry(spec: SearchSpec, store: dict[str, str]) -> None:
    driver = Driver(spec, store)

    def half_written(outcome: CohortOutcome) -> None:
        path = driver.spool.write(outcome)
        path.rename(path.with_suffix(".partial"))  # the rename never happened
        raise DriverDied

    outcome = driver.cohort("c1", measured=half_written)
    act = outcome.members[0].params.activation
    resumed = _resume(spec, store)
    # Never durable, so never counted: FAIL in Optuna (retrained under new numbers), no
    # child run in MLflow, nothing left in the spool.
    assert {t.state for t in resumed.studies[act].trials} == {optuna.trial.TrialState.FAIL}
    assert resumed.remaining[act] == spec.budget.trials_per_activation
    _check_converged(resumed, [])
    assert list(resumed.spool.path.iterdir()) == []


def test_open_run_without_a_spooled_result_is_killed_not_left_running(
    spec: SearchSpec, store: dict[str, str]
) -> None:
    driver = Driver(spec, store)
    driver.tracker.start()
    client = driver.tracker.client
    key = trial_key(spec.search_id, "relu", 99)
    tags = {TAG_ROLE: "trial", TAG_SEARCH_ID: spec.search_id, TAG_TRIAL_KEY: key}
    orphan = client.create_run(driver.tracker.experiment_id, tags=tags).info.run_id
    client.log_batch(orphan, metrics=[Metric("train/loss", 1.0, 0, 0)])
    resumed = _resume(spec, store)
    assert resumed.tracker.reconciled is not None
    assert resumed.tracker.reconciled.kept_killed == 1
    run = client.get_run(orphan)
    # all there is of that trial: kept visible, but no longer claiming to run
    assert run.info.status == RunStatus.to_string(RunStatus.KILLED)
    assert run.info.lifecycle_stage == "active"


def test_resume_seeds_the_early_stopping_bar(spec: SearchSpec, store: dict[str, str]) -> None:
    from search.orchestrate import _seed_best

    driver = Driver(spec, store)
    driver.tracker.start()
    outcome = driver.cohort("c1")
    assert driver.tracker.drain() == 0
    reached = [
        int(m.aggregate.steps_to_target)
        for m in outcome.members
        if m.aggregate is not None and m.aggregate.reached
    ]
    resumed = Driver(spec, store)
    resumed.tracker.start()
    best = _seed_best(resumed.tracker, [])
    resumed.tracker.drain()
    act = outcome.members[0].params.activation
    assert best.get(act) == (min(reached) if reached else None)


def test_one_driver_per_search(store: dict[str, str]) -> None:
    with search_lock(store["tracking_uri"], "s-1"):
        with (
            pytest.raises(SpecError, match="another actsweep process"),
            search_lock(store["tracking_uri"], "s-1"),
        ):
            pass
        with search_lock(store["tracking_uri"], "s-2"):  # other searches are not blocked
            pass
    with search_lock(store["tracking_uri"], "s-1"):  # released when the holder ends
        pass


def test_sync_bad_input_is_one_line_exit_2(
    tmp_path: Path,
    store: dict[str, str],
    tiny_spec: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["sync", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.yaml" in err
    spec = write_spec(tmp_path / "tiny.yaml", tiny_spec)
    uri = store["tracking_uri"]
    assert main(["sync", str(spec), "--tracking-uri", "ftp://x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--tracking-uri" in err
    # a search that never ran: nothing to sync, said in one line naming the spec
    assert main(["sync", str(spec), "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "spec: " in err and "nothing to sync" in err
    assert not os.path.exists(spool_dir(uri, parse_spec(tiny_spec).search_id))


class _FlakyTerminate(MlflowClient):
    """A client whose first `set_terminated` of a child run fails after the run was
    created and filled: the writer's MLflow call dies mid-trial (injected fault)."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.failed: list[str] = []

    def set_terminated(self, run_id: str, *args: Any, **kwargs: Any) -> None:
        status = args[0] if args else kwargs.get("status")
        if not self.failed and status == "FINISHED":
            self.failed.append(run_id)
            from mlflow.exceptions import MlflowException

            raise MlflowException("injected: the server went away")
        super().set_terminated(run_id, *args, **kwargs)


def test_writer_rides_out_a_failure_mid_trial_and_closes_what_it_left_open(
    spec: SearchSpec, store: dict[str, str]
) -> None:
    notes: list[str] = []
    driver = Driver(spec, store)
    driver.tracker = Tracker(store["tracking_uri"], spec, spool=driver.spool, notify=notes.append)
    flaky = _FlakyTerminate(store["tracking_uri"])
    driver.tracker.client = flaky
    driver.tracker.start()
    outcome = driver.cohort("c1")
    assert driver.tracker.drain(window=60) == 0  # retried, not given up
    by_key = _check_converged(driver, [outcome])
    [orphan] = flaky.failed
    assert orphan not in {r.info.run_id for r in by_key.values()}
    left = flaky.get_run(orphan)
    assert left.info.status == "KILLED" and left.info.lifecycle_stage == "deleted"
    assert len(notes) == 2 and "injected" in notes[0] and "answers again" in notes[1]


def test_writer_gives_up_at_the_end_of_the_window_and_keeps_the_spool(
    spec: SearchSpec, store: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = Driver(spec, store)
    driver.tracker.start()
    # The store disappears under the writer: every MLflow call now fails.
    driver.tracker.client = MlflowClient("http://127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    outcome = driver.cohort("c1")
    assert driver.tracker.drain(window=0) == len(outcome.members)
    assert driver.tracker.last_error is not None
    assert len(driver.spool.files()) == 1
    # the next driver (or `actsweep sync`) uploads it
    resumed = _resume(spec, store)
    _check_converged(resumed, [outcome])
