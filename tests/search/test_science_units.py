"""Pure pieces of the science layer: seed fields in the spec, the searcher's grouping of seeds
into trials, the lr probe's stability rule, and the convergence map, on hand-made inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest

from search.convergence_map import convergence_map, lr_curve, map_table
from search.errors import SpecError
from search.probe import ProbePoint, largest_stable
from search.searcher import CohortOutcome, CohortSearcher
from search.space import member_seed
from search.spec import parse_spec


def test_seeds_default_to_three_and_must_be_positive(base_spec: dict[str, Any]) -> None:
    assert parse_spec(base_spec).seeds == 3
    assert parse_spec({**base_spec, "seeds": 1}).seeds == 1
    with pytest.raises(SpecError, match="^seeds:"):
        parse_spec({**base_spec, "seeds": 0})
    with pytest.raises(SpecError, match="diagnostics.every"):
        parse_spec({**base_spec, "diagnostics": {"every": 0}})


def _summary(steps: int | None, trained: int, diverged: bool = False) -> dict[str, Any]:
    return {
        "reached": steps is not None,
        "steps_to_target": steps,
        "steps_trained": trained,
        "diverged": diverged,
    }


def test_searcher_asks_paired_seeds_and_tells_one_km_median_per_trial(
    base_spec: dict[str, Any],
) -> None:
    base_spec["space"]["activations"] = ["relu"]
    base_spec["budget"] = {"trials_per_activation": 2, "cohort_size": 2}
    spec = parse_spec(base_spec)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    done: list[CohortOutcome] = []
    searcher = CohortSearcher(
        spec=spec, studies={"relu": study}, remaining={"relu": 2}, on_cohort_done=done.append
    )
    searcher._spec = spec.model_copy(
        update={"budget": spec.budget.model_copy(update={"cohort_size": 2})}
    )
    config = searcher.suggest("t1")
    assert config is not None
    seeds = [member_seed(spec, i) for i in range(3)]
    # trial-major: trial 0's three seeds, then trial 1's
    assert [m["seed"] for m in config["members"]] == seeds * 2
    assert [m["number"] for m in config["members"]] == [0, 0, 0, 1, 1, 1]
    outcomes = [
        (_summary(100, 100), 100.0),  # trial 0: reached, reached, censored -> KM median 150
        (_summary(150, 150), 150.0),
        (_summary(None, 200), 400.0),
        (_summary(50, 50), 50.0),  # trial 1: one reached, two diverged -> no median:
        (_summary(None, 25, True), 10_000.0),  # median of the seed scores = 10000
        (_summary(None, 50, True), 10_500.0),
    ]
    members = [
        {"member": {"seed": m["seed"]}, "summary": s, "score": score, "wall_seconds": 1.0}
        for m, (s, score) in zip(config["members"], outcomes, strict=True)
    ]
    searcher.on_trial_complete("t1", {"members": members})
    assert [t.value for t in study.trials] == [150.0, 10_000.0]
    (outcome,) = done
    first, second = outcome.members
    assert first.aggregate is not None and first.aggregate.reached and first.seeds == tuple(seeds)
    assert second.aggregate is not None and not second.aggregate.reached
    assert second.aggregate.diverged  # 2 of 3 seeds diverged


def test_largest_stable_lr_is_the_last_lr_before_the_first_divergence() -> None:
    def point(lr: float, *diverged: bool) -> ProbePoint:
        return ProbePoint(lr, [100.0] * len(diverged), [True] * len(diverged), list(diverged))

    assert largest_stable(
        [point(0.1, False, False), point(0.2, False, True), point(0.4, False, False)]
    ) == (0.1, 0.2)
    assert largest_stable([point(0.1, False), point(0.2, False)]) == (0.2, None)  # lower bound
    assert largest_stable([point(0.1, True)]) == (None, 0.1)


def _child(
    run_id: str, act: str, depth: int, init: str, lr: float, steps: float, reached: bool
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "status": "FINISHED",
        "params.activation": act,
        "params.depth": str(depth),
        "params.init": init,
        "params.lr": repr(lr),
        "metrics.reached": float(reached),
        "metrics.steps_to_target": steps,
    }


def test_convergence_map_takes_the_best_reached_trial_per_cell() -> None:
    runs = pd.DataFrame(
        [
            _child("a", "elu", 2, "auto", 0.01, 300, True),
            _child("b", "elu", 2, "kaiming_normal", 0.1, 200, True),
            _child("c", "elu", 4, "auto", 1.0, 1000, False),
            _child("d", "tanh", 4, "auto", 0.1, 500, True),
        ]
    )
    cmap = convergence_map(runs, ["elu", "tanh"], {"elu": {"largest_stable_lr": 0.4}})
    depth = cmap["by_depth"]
    assert depth["depths"] == [2, 4]
    assert depth["best_steps"] == [[200.0, None], [None, 500.0]]
    assert depth["run_ids"] == [["b", None], [None, "d"]]
    init = cmap["by_init"]  # auto resolves per activation: He for elu, Glorot for tanh
    assert init["inits"] == ["kaiming_normal", "xavier_normal"]
    assert init["best_steps"] == [[200.0, None], [None, 500.0]]
    assert cmap["lr_probe"]["elu"]["largest_stable_lr"] == 0.4
    curve = lr_curve(map_table(runs), "elu", bins=2)
    assert [p["lr"] for p in curve["points"]] == [0.01, 0.1, 1.0]
    # bins over log10 lr in [-2, 0]: [-2, -1) holds 0.01 (300), [-1, 0] holds 0.1 and 1.0
    assert [b["best_steps"] for b in curve["bins"]] == [300.0, 200.0]
    assert [b["trials"] for b in curve["bins"]] == [1, 2]


def test_report_of_an_unknown_experiment_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from search.cli import main

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    code = main(["report", "ghost", "--out", str(tmp_path / "r"), "--tracking-uri", uri])
    err = capsys.readouterr().err
    assert code == 2 and "no experiment named 'ghost'" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()  # nothing written
