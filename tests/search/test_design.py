"""The start-up design covers every stratum of every parameter (pure)."""

from __future__ import annotations

import math
from typing import Any

from search.design import latin_hypercube
from search.spec import parse_spec


def _space(base_spec: dict[str, Any], **space: Any) -> Any:
    base_spec["space"].update(space)
    return parse_spec(base_spec).space


def test_each_slice_of_each_parameter_holds_one_point(base_spec: dict[str, Any]) -> None:
    space = _space(
        base_spec,
        depth={"low": 1, "high": 6},
        initializers=["kaiming_normal", "xavier_normal"],
        lr={"low": 1e-3, "high": 1.0},
    )
    n = 12
    points = latin_hypercube(space, n, seed=3)
    assert len(points) == n
    # Depth: 12 points over 6 depths -> exactly 2 each; inits: 6 each.
    depths = [p["depth"] for p in points]
    assert sorted(depths) == sorted(list(range(1, 7)) * 2)
    inits = [p["init"] for p in points]
    assert inits.count("kaiming_normal") == inits.count("xavier_normal") == 6
    # log-lr: exactly one point in each of the 12 equal slices of [log 1e-3, log 1].
    slices = sorted(
        int((math.log(p["lr"]) - math.log(1e-3)) / (math.log(1.0) - math.log(1e-3)) * n)
        for p in points
    )
    assert slices == list(range(n))
    assert all(1e-3 <= p["lr"] <= 1.0 for p in points)


def test_deterministic_and_seed_dependent(base_spec: dict[str, Any]) -> None:
    space = _space(base_spec)
    assert latin_hypercube(space, 5, 1) == latin_hypercube(space, 5, 1)
    assert latin_hypercube(space, 5, 1) != latin_hypercube(space, 5, 2)
    assert latin_hypercube(space, 0, 1) == []


def test_fewer_points_than_depths_are_spread(base_spec: dict[str, Any]) -> None:
    space = _space(base_spec, depth={"low": 1, "high": 8})
    depths = sorted(p["depth"] for p in latin_hypercube(space, 4, 0))
    # One point in each quarter of the depth range: {1,2}, {3,4}, {5,6}, {7,8}.
    assert [(d - 1) // 2 for d in depths] == [0, 1, 2, 3]


def _searcher(base_spec: dict[str, Any], **budget: Any) -> tuple[Any, Any, Any]:
    import optuna

    from search.searcher import CohortSearcher

    base_spec["space"].update(
        activations=["relu"],
        depth={"low": 1, "high": 4},
        initializers=["kaiming_normal", "xavier_normal"],
    )
    base_spec["budget"] = {"trials_per_activation": 8, "cohort_size": 4, **budget}
    base_spec["sampler"] = {"name": "tpe", "n_startup_trials": 4}
    base_spec["diagnostics"] = {"enabled": False}
    spec = parse_spec(base_spec)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=4))
    searcher = CohortSearcher(
        spec=spec, studies={"relu": study}, remaining={"relu": 8}, on_cohort_done=lambda o: None
    )
    return spec, study, searcher


def test_first_cohort_is_the_design_and_mixes_depths(base_spec: dict[str, Any]) -> None:
    from search.space import derive_seed

    spec, study, searcher = _searcher(base_spec)
    assert spec.mixed_depths  # diagnostics off
    config = searcher.suggest("t1")
    design = latin_hypercube(spec.space, 4, derive_seed(spec.seed, "design", "relu"))
    asked = [t.params for t in study.get_trials(deepcopy=False)]
    assert [{"depth": p["depth"], "init": p["init"], "lr": p["lr"]} for p in asked] == [
        {"depth": d["depth"], "init": d["init"], "lr": d["lr"]} for d in design
    ]
    # One member per depth 1..4, the cohort as deep as its deepest member.
    assert sorted(m["depth"] for m in config["members"] if m["seed_index"] == 0) == [1, 2, 3, 4]
    assert config["depth"] == 4
    # The design is spent: the next cohort comes from the sampler (not the design's points).
    searcher.suggest("t2")
    later = [t.params for t in study.get_trials(deepcopy=False)][4:]
    assert len(later) == 4 and all(p not in asked for p in later)


def test_cohorts_of_one_depth_when_diagnostics_are_on(base_spec: dict[str, Any]) -> None:
    base_spec_on = {**base_spec}
    spec, study, searcher = _searcher(base_spec_on, mixed_depths=False)
    config = searcher.suggest("t1")
    assert len({m["depth"] for m in config["members"]}) == 1
    assert len({t.params["depth"] for t in study.get_trials(deepcopy=False)}) == 1
