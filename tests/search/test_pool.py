"""Pooled sampling (search.pool): one sampler learns from every activation's trials, while
each activation keeps its own study. Real Optuna studies (in memory), no Ray: the searcher is
driven the way Tune drives it, with hand-made cohort results."""

from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.trial import TrialState

from search.orchestrate import open_studies
from search.pool import POOL_PARAM, pooled_study
from search.searcher import CohortSearcher
from search.spec import SearchSpec, parse_spec

GOOD_LR = {"low": 0.004, "high": 0.2}


def _spec(base_spec: dict[str, Any], pooled: bool = True) -> SearchSpec:
    base_spec["space"].update(
        activations=["relu", "tanh"],
        depth={"low": 1, "high": 3},
        initializers=["kaiming_normal", "xavier_normal"],
        lr={"low": 1e-3, "high": 1.0},
    )
    base_spec["budget"] = {"trials_per_activation": 12, "cohort_size": 4}
    base_spec["sampler"] = {"name": "tpe", "n_startup_trials": 4, "pooled": pooled}
    base_spec["diagnostics"] = {"enabled": False}
    base_spec["seeds"] = 1
    return parse_spec(base_spec)


def _result(member: dict[str, Any], good: tuple[float, float]) -> dict[str, Any]:
    """A run that reaches fast when its lr is inside ``good`` (the same for every activation)
    and is censored otherwise."""
    inside = good[0] <= member["lr"] <= good[1]
    steps = 100 + int(50 * abs(math.log(member["lr"] / math.sqrt(good[0] * good[1]))))
    summary = {
        "reached": inside,
        "steps_to_target": steps if inside else None,
        "steps_trained": steps if inside else 200,
        "diverged": False,
    }
    return {
        "member": {"seed": member["seed"]},
        "summary": summary,
        "score": float(steps if inside else 400),
    }


def _searcher(
    spec: SearchSpec,
    pooled: bool,
    lookahead: bool = False,
    cls: type[CohortSearcher] = CohortSearcher,
) -> tuple[CohortSearcher, dict[str, optuna.Study]]:
    studies, remaining = open_studies(spec, optuna.storages.InMemoryStorage())
    searcher = cls(
        spec=spec,
        studies=studies,
        remaining=remaining,
        on_cohort_done=lambda o: None,
        pool=pooled_study(spec, studies) if pooled else None,
        lookahead=lookahead,
    )
    return searcher, studies


def _run_cohort(searcher: CohortSearcher, n: int, good: tuple[float, float]) -> dict[str, Any]:
    config = searcher.suggest(f"t{n}")
    assert isinstance(config, dict)
    members = [_result(m, good) for m in config["members"]]
    searcher.on_trial_complete(f"t{n}", {"members": members})
    return config


def _twins(pool: optuna.Study) -> list[tuple[str, dict[str, Any], float | None, TrialState]]:
    return sorted(
        (
            (
                t.params[POOL_PARAM],
                {k: v for k, v in t.params.items() if k != POOL_PARAM},
                t.value,
                t.state,
            )
            for t in pool.get_trials(deepcopy=False)
        ),
        key=repr,
    )


def test_every_trial_has_one_twin_in_the_pool_with_its_params_and_value(
    base_spec: dict[str, Any],
) -> None:
    spec = _spec(base_spec)
    searcher, studies = _searcher(spec, pooled=True)
    pool = searcher._pool
    assert pool is not None
    for n in range(4):
        _run_cohort(searcher, n, (0.01, 0.1))
    # A cohort that failed every attempt: its trials FAIL in its study and in the pool.
    searcher.suggest("failed")
    searcher.on_trial_complete("failed", error=True)
    expected = sorted(
        (
            (act, t.params, t.value, t.state)
            for act, study in studies.items()
            for t in study.get_trials(deepcopy=False)
        ),
        key=repr,
    )
    assert _twins(pool) == expected
    assert sum(state == TrialState.FAIL for *_, state in expected) == spec.budget.cohort_size
    # A resumed search rebuilds the same pool from the studies (completed trials only).
    rebuilt = pooled_study(spec, studies)
    assert _twins(rebuilt) == [t for t in expected if t[3] == TrialState.COMPLETE]


def test_the_design_stops_once_the_pool_has_its_start_up_trials(
    base_spec: dict[str, Any],
) -> None:
    from search.design import latin_hypercube
    from search.space import derive_seed

    spec = _spec(base_spec)
    searcher, studies = _searcher(spec, pooled=True)
    relu = _run_cohort(searcher, 0, (0.01, 0.1))  # pool empty: relu's start-up design
    design = latin_hypercube(spec.space, 4, derive_seed(spec.seed, "design", "relu"))
    assert [m["lr"] for m in relu["members"]] == [d["lr"] for d in design]
    # Four completed trials in the pool (n_startup_trials): tanh's first cohort is drawn by
    # the pooled sampler, not from tanh's own design.
    tanh = _run_cohort(searcher, 1, (0.01, 0.1))
    tanh_design = latin_hypercube(spec.space, 4, derive_seed(spec.seed, "design", "tanh"))
    assert [m["lr"] for m in tanh["members"]] != [d["lr"] for d in tanh_design]


def _tanh_lrs_after_relu(base_spec: dict[str, Any], good: tuple[float, float], pooled: bool):
    import copy

    spec = _spec(copy.deepcopy(base_spec), pooled=pooled)
    searcher, studies = _searcher(spec, pooled=pooled)
    n = 0
    # relu runs its whole budget first (tanh's turns are skipped by giving tanh none yet).
    searcher._remaining["tanh"] = 0
    while searcher._remaining["relu"]:
        _run_cohort(searcher, n, good)
        n += 1
    searcher._remaining["tanh"] = spec.budget.trials_per_activation
    config = _run_cohort(searcher, n, good)
    return [m["lr"] for m in config["members"]]


def test_what_one_activation_learns_moves_the_others_proposals(
    base_spec: dict[str, Any],
) -> None:
    low, high = (0.002, 0.01), (0.1, 0.5)
    pooled_low = _tanh_lrs_after_relu(base_spec, low, pooled=True)
    pooled_high = _tanh_lrs_after_relu(base_spec, high, pooled=True)

    def inside(lrs: list[float], band: tuple[float, float]) -> int:
        return sum(band[0] <= lr <= band[1] for lr in lrs)

    # tanh has no result of its own yet: only relu's results can put its proposals there.
    assert inside(pooled_low, low) > inside(pooled_low, high)
    assert inside(pooled_high, high) > inside(pooled_high, low)
    # Without pooling, tanh's first cohort is its own design whatever relu found.
    alone_low = _tanh_lrs_after_relu(base_spec, low, pooled=False)
    alone_high = _tanh_lrs_after_relu(base_spec, high, pooled=False)
    assert alone_low == alone_high


def test_pooling_is_off_by_default_and_part_of_the_search_identity(
    base_spec: dict[str, Any],
) -> None:
    import copy

    plain = parse_spec(copy.deepcopy(base_spec))
    assert plain.sampler.pooled is False
    explicit = copy.deepcopy(base_spec)
    explicit["sampler"] = {**explicit["sampler"], "pooled": False}
    # Searches that existed before the field keep their identity (resume finds them).
    assert parse_spec(explicit).search_id == plain.search_id
    pooled = copy.deepcopy(base_spec)
    pooled["sampler"] = {**pooled["sampler"], "pooled": True}
    assert parse_spec(pooled).search_id != plain.search_id
