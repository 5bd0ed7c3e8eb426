"""The "nothing lost" oracle for fault tests.

Every cohort trained through `oracle_trainable` appends what each member measured to a local
JSON-lines file, flushed and fsynced line by line, from the worker itself: one ``eval`` line
per (trial, seed, evaluation step, loss) and one ``final`` line per (trial, seed) with its
outcome. The file is written before the result travels back to the driver, so whatever the
driver, MLflow or Optuna lose afterwards, the oracle still has.

`check_nothing_lost` then compares MLflow (plain client), the Optuna studies and the
leaderboard against it: every trial the oracle saw is in MLflow exactly once, FINISHED,
with the oracle's numbers; Optuna has no RUNNING trial and exactly the budget of COMPLETE
ones, each of which the oracle saw; the leaderboard's best per activation is the oracle's.

A fault can be injected into the trainable with `fault(config, attempt_dir)`, called on the
worker before training (see tests/faults/test_*.py).
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from search.spec import SearchSpec

Fault = Callable[[dict[str, Any]], None]


def _append(path: Path, rows: list[dict[str, Any]]) -> None:
    # O_APPEND writes of whole lines: concurrent workers never interleave within a line.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        for row in rows:
            os.write(fd, (json.dumps(row) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def oracle_trainable(path: str | Path, fault: Fault | None = None) -> Callable[..., None]:
    """A Tune function trainable: `search.trainable.tune_trainable` plus the oracle file."""
    oracle = Path(path)

    def trainable(config: dict[str, Any], context: Any) -> None:
        import ray
        from ray import tune

        from search.trainable import run_cohort

        if fault is not None:
            fault(config)
        attempt = uuid.uuid4().hex
        report = run_cohort(config, context)
        rows: list[dict[str, Any]] = []
        for m, r in zip(config["members"], report["members"], strict=True):
            base = {
                "attempt": attempt,
                "pid": os.getpid(),
                "activation": config["activation"],
                "number": int(m["number"]),
                "seed_index": int(m.get("seed_index", 0)),
            }
            for step, loss in zip(r["steps"], r["train_loss"], strict=True):
                rows.append({**base, "kind": "eval", "step": int(step), "loss": float(loss)})
            s = r["summary"]
            rows.append(
                {
                    **base,
                    "kind": "final",
                    "reached": bool(s["reached"]),
                    "diverged": bool(s["diverged"]),
                    "steps_to_target": s["steps_to_target"],
                    "steps_trained": s["steps_trained"],
                    "score": float(r["score"]),
                }
            )
        _append(oracle, rows)
        report["node_id"] = ray.get_runtime_context().get_node_id()
        report["node_ip"] = ray.util.get_node_ip_address()
        report["cohort_best_score"] = min(m["score"] for m in report["members"])
        tune.report(report)

    return trainable


@dataclass(frozen=True)
class OracleTrial:
    activation: str
    number: int
    finals: dict[int, dict[str, Any]]
    """seed_index -> final line (identical across attempts: training is deterministic)."""
    losses: dict[int, list[tuple[int, float]]]
    """seed_index -> [(step, loss)] of one attempt."""
    attempts: int = 1
    """How many times a worker trained it (more than one: trained again)."""


def read_oracle(path: str | Path) -> dict[tuple[str, int], OracleTrial]:
    """Trials the workers finished training, keyed by (activation, Optuna trial number).

    A retried cohort (worker killed after writing, before reporting) appears once per
    attempt; attempts must agree, which is asserted here.
    """
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    finals: dict[tuple[str, int], dict[int, dict[str, Any]]] = defaultdict(dict)
    losses: dict[tuple[str, int, str], dict[int, list[tuple[int, float]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for row in rows:
        key = (row["activation"], row["number"])
        if row["kind"] == "eval":
            losses[(*key, row["attempt"])][row["seed_index"]].append((row["step"], row["loss"]))
            continue
        outcome = {k: row[k] for k in ("reached", "diverged", "steps_to_target", "steps_trained")}
        seen = finals[key].get(row["seed_index"])
        assert seen is None or seen == outcome, f"attempts of {key} disagree: {seen} vs {outcome}"
        finals[key][row["seed_index"]] = outcome
    out = {}
    for key, per_seed in finals.items():
        attempt_losses = next(v for (a, n, _), v in losses.items() if (a, n) == key)
        attempts = sum(1 for (a, n, _) in losses if (a, n) == key)
        out[key] = OracleTrial(key[0], key[1], per_seed, dict(attempt_losses), attempts)
    return out


def _reject_constant(name: str) -> float:
    raise AssertionError(f"leaderboard holds {name}")


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def check_nothing_lost(
    oracle_path: str | Path,
    spec: SearchSpec,
    *,
    tracking_uri: str,
    optuna_storage: str,
) -> dict[str, int]:
    """Assert MLflow, Optuna and the leaderboard of `spec`'s search against the oracle;
    return counts."""
    experiment = spec.experiment_name
    search_id = spec.search_id
    activations = list(spec.space.activations)
    trials_per_activation = spec.budget.trials_per_activation
    import optuna
    from mlflow.tracking import MlflowClient

    from search.leaderboard import compute_leaderboard, render, trials_table
    from search.orchestrate import optuna_storage as open_storage
    from search.space import study_name
    from search.tracking import trial_runs_of

    oracle = read_oracle(oracle_path)
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"

    # MLflow: every non-deleted child run, exactly one per trial key, none left RUNNING.
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`actsweep.search_id` = '{search_id}' and tags.`actsweep.role` = 'trial'",
        max_results=50000,
    )
    by_key: dict[str, list[Any]] = defaultdict(list)
    for run in runs:
        by_key[run.data.tags["actsweep.trial_key"]].append(run)
    twins = {k: [r.info.run_id for r in v] for k, v in by_key.items() if len(v) > 1}
    assert not twins, f"trials with more than one child run: {twins}"
    unfinished = [r.info.run_id for r in runs if r.info.status != "FINISHED"]
    parents = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`actsweep.search_id` = '{search_id}' and tags.`actsweep.role` = 'search'",
    )
    assert len(parents) == 1, f"{len(parents)} parent runs for {search_id}"
    assert parents[0].info.status == "FINISHED", parents[0].info.status
    running = client.search_runs([exp.experiment_id], filter_string="attributes.status = 'RUNNING'")
    assert not running, f"runs left RUNNING: {[r.info.run_id for r in running]}"

    # Optuna: no RUNNING trial, the budget of COMPLETE ones, each measured by the oracle.
    storage = open_storage(optuna_storage)
    complete_total = 0
    for act in activations:
        study = optuna.load_study(study_name=study_name(search_id, act), storage=storage)
        trials = study.get_trials(deepcopy=False)
        states = [t.state for t in trials]
        assert optuna.trial.TrialState.RUNNING not in states, f"{act}: RUNNING trials left"
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(complete) == trials_per_activation, (
            f"{act}: {len(complete)} COMPLETE trials, budget {trials_per_activation}"
        )
        complete_total += len(complete)
        for t in complete:
            assert (act, t.number) in oracle, f"{act} trial {t.number} COMPLETE but never trained"
            key = f"{search_id}/{act}/{t.number}"
            assert key in by_key, f"{key}: told to Optuna but not in MLflow"
            run = by_key[key][0]
            assert run.info.status == "FINISHED", f"{key}: child run {run.info.status}"
            assert t.value is not None and _close(run.data.metrics["score"], t.value), key

    # Every trial the oracle saw reported is in MLflow with the oracle's numbers.
    for (act, number), trial in oracle.items():
        key = f"{search_id}/{act}/{number}"
        if key not in by_key:
            # Trained, but the cohort never completed (its driver died first): it must then
            # not count as COMPLETE anywhere, which the Optuna loop above already checked.
            continue
        run = by_key[key][0]
        m = run.data.metrics
        for i, final in trial.finals.items():
            observed = final["steps_to_target"] if final["reached"] else final["steps_trained"]
            assert _close(m[f"seed{i}/steps_to_target"], float(observed)), (key, i)
            assert m[f"seed{i}/reached"] == float(final["reached"]), (key, i)
            assert m[f"seed{i}/diverged"] == float(final["diverged"]), (key, i)
        history = {
            (h.step, h.value) for h in client.get_metric_history(run.info.run_id, "train/loss")
        }
        expected = {(s, v) for s, v in trial.losses.get(0, []) if math.isfinite(v)}
        assert len(history) == len(expected), (key, len(history), len(expected))
        for (s1, v1), (s2, v2) in zip(sorted(history), sorted(expected), strict=True):
            assert s1 == s2 and _close(v1, v2), (key, s1, v1, s2, v2)

    # Leaderboard: each activation's best equals the best over the MLflow runs the oracle
    # confirmed (recomputed here from the plain client's dataframe).
    df = trial_runs_of(exp.experiment_id, search_id, tracking_uri)
    board = compute_leaderboard(trials_table(df), activations)
    for act in activations:
        row = board[board["activation"] == act].iloc[0]
        assert int(row["finished"]) == trials_per_activation, (act, row["finished"])
        reached = [
            float(r.data.metrics["steps_to_target"])
            for v in by_key.values()
            for r in v
            if r.data.tags.get("activation") == act and r.data.metrics.get("reached") == 1.0
        ]
        if reached:
            assert float(row["steps_to_target"]) == min(reached), (act, row["steps_to_target"])
    # Never NaN or infinity as a value: the JSON leaderboard parses under a strict parser.
    json.loads(render(board, "json"), parse_constant=_reject_constant)
    return {
        "oracle_trials": len(oracle),
        "child_runs": len(runs),
        "unfinished_child_runs": len(unfinished),
        "optuna_complete": complete_total,
    }
