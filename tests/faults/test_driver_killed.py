"""Issue #7, item 4: the driver SIGKILLed mid-search, then the same command again.

The real CLI runs as a process (with the oracle trainable, tests/faults/run_oracle.py) and
is killed with its whole Ray once Optuna holds some COMPLETE trials; re-running the same
command resumes it. Afterwards nothing is lost (the oracle comparison), nothing that had
finished was trained again, the budget is met exactly, nothing is left RUNNING in MLflow or
Optuna, and every trial has exactly one child run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from search.orchestrate import optuna_storage
from search.space import study_name
from search.spec import parse_spec
from tests.faults.driver import driver_tracebacks, kill_session, run, start, wait_for
from tests.faults.oracle import check_nothing_lost, read_oracle
from tests.search.conftest import write_spec

pytestmark = pytest.mark.slow


def _complete(journal: Path, search_id: str, activations: list[str]) -> dict[Any, float] | None:
    """(activation, number) -> value of the COMPLETE Optuna trials (None: no journal yet)."""
    if not journal.exists():
        return None
    try:
        storage = optuna_storage(str(journal))
        out = {}
        for act in activations:
            study = optuna.load_study(study_name=study_name(search_id, act), storage=storage)
            for t in study.get_trials(deepcopy=False):
                if t.state == optuna.trial.TrialState.COMPLETE:
                    assert t.value is not None
                    out[(act, t.number)] = t.value
        return out
    except KeyError:  # the study is not created yet
        return None


def test_driver_sigkilled_then_rerun_resumes_and_loses_nothing(
    tmp_path: Path, tiny_spec: dict[str, Any]
) -> None:
    tiny_spec["budget"] = {"trials_per_activation": 6, "cohort_size": 2}
    spec = parse_spec(tiny_spec)
    acts = list(spec.space.activations)
    total = 6 * len(acts)
    path = write_spec(tmp_path / "spec.yaml", tiny_spec)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    journal = tmp_path / ".actsweep" / "optuna.journal"
    oracle = tmp_path / "oracle.jsonl"
    command = ("run", str(path), "--tracking-uri", uri)

    proc = start(tmp_path, oracle, *command)

    def some_finished() -> dict[Any, float] | None:
        assert proc.poll() is None, (tmp_path / "driver-0.err").read_text()[-3000:]
        done = _complete(journal, spec.search_id, acts)
        return done if done and len(done) >= 2 else None

    wait_for(some_finished, "the first COMPLETE trials")
    killed = kill_session(proc)
    assert killed > 2  # the driver and the Ray it started
    before = _complete(journal, spec.search_id, acts)
    assert before is not None and 2 <= len(before) < total, "killed mid-search"

    code, out, err = run(tmp_path, oracle, *command)
    assert code == 0, err[-3000:]
    assert "resuming" in out
    assert not driver_tracebacks(err), err[-3000:]

    counts = check_nothing_lost(
        oracle,
        spec,
        tracking_uri=uri,
        optuna_storage=str(journal),
    )
    assert counts["optuna_complete"] == total
    assert counts["unfinished_child_runs"] == 0
    # Completed trials are kept (same number, same value) and were trained once; no trial
    # was trained twice at all (a cohort in flight at the kill is retrained under new
    # Optuna numbers, its old numbers FAIL).
    after = _complete(journal, spec.search_id, acts)
    assert after is not None and len(after) == total
    assert all(after[k] == v for k, v in before.items())
    trials = read_oracle(oracle)
    again = {k: t.attempts for k, t in trials.items() if t.attempts > 1}
    assert not again, f"trained more than once: {again}"
    # what the kill interrupted is FAIL in Optuna, and has no child run
    storage = optuna_storage(str(journal))
    for act in acts:
        study = optuna.load_study(study_name=study_name(spec.search_id, act), storage=storage)
        for t in study.get_trials(deepcopy=False):
            assert t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
    assert counts["child_runs"] == total
