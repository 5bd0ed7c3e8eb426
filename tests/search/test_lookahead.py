"""Lookahead (search.searcher): the next cohort is asked in a helper thread while the others
train, and handed out when a worker frees. Real Optuna studies (in memory), no Ray: the
searcher is driven the way Tune drives it, two slots, with hand-made cohort results."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from search.searcher import CohortSearcher
from search.spec import parse_spec
from tests.search.test_pool import _result, _searcher, _spec


def _members(config: dict[str, Any], good: tuple[float, float] | None) -> list[dict[str, Any]]:
    """Members' results: `_result`'s, or every member reaching (good=None) in 100-175 steps."""
    if good is not None:
        return [_result(m, good) for m in config["members"]]
    return [
        {
            "member": {"seed": m["seed"]},
            "summary": {
                "reached": True,
                "steps_to_target": (steps := 100 + int(50 * abs(math.log10(m["lr"]) + 1.5))),
                "steps_trained": steps,
                "diverged": False,
            },
            "score": float(steps),
        }
        for m in config["members"]
    ]


def _trial_of(studies: dict[str, optuna.Study], act: str, number: int) -> optuna.trial.FrozenTrial:
    return studies[act].get_trials(deepcopy=False)[number]


def test_a_freed_slot_gets_the_cohort_asked_before_the_result_that_freed_it(
    base_spec: dict[str, Any],
) -> None:
    spec = _spec(base_spec)
    searcher, studies = _searcher(spec, pooled=True, lookahead=True)
    try:
        first = searcher.suggest("t1")
        second = searcher.suggest("t2")
        assert isinstance(first, dict) and isinstance(second, dict)
        searcher.on_trial_complete("t1", {"members": _members(first, None)})
        third = searcher.suggest("t3")
        assert isinstance(third, dict)
    finally:
        searcher.close()
    told = max(
        _trial_of(studies, first["activation"], m["number"]).datetime_complete
        for m in first["members"]
    )
    asked = [
        _trial_of(studies, third["activation"], m["number"]).datetime_start
        for m in third["members"]
    ]
    # Asked ahead, while t1 and t2 trained: before t1's result was told.
    assert all(a is not None and told is not None and a < told for a in asked)
    # The early-stopping bar is read at hand-out: t1's result is in it, though the cohort
    # was asked before that result arrived (both cohorts are of the same activation).
    assert third["activation"] == first["activation"]
    best = min(r["summary"]["steps_to_target"] for r in _members(first, None))
    assert third["stop_at"] == best
    assert first["stop_at"] is None


def test_a_whole_search_with_lookahead_tells_every_trial_once_and_keeps_the_budget(
    base_spec: dict[str, Any],
) -> None:
    spec = _spec(base_spec)
    searcher, studies = _searcher(spec, pooled=True, lookahead=True)
    handed: list[tuple[str, int]] = []
    running: list[tuple[str, dict[str, Any]]] = []
    n = 0
    try:
        while True:
            while len(running) < 2:
                n += 1
                config = searcher.suggest(f"t{n}")
                if not isinstance(config, dict):
                    break
                handed += [(config["activation"], m["number"]) for m in config["members"]]
                running.append((f"t{n}", config))
            if not running:
                break
            tid, config = running.pop(0)
            searcher.on_trial_complete(tid, {"members": _members(config, (0.01, 0.1))})
    finally:
        searcher.close()
    assert config == CohortSearcher.FINISHED
    # Every Optuna trial was handed out in exactly one cohort and told exactly once.
    assert len(handed) == len(set(handed))
    per_act = spec.budget.trials_per_activation
    for act, study in studies.items():
        trials = study.get_trials(deepcopy=False)
        assert Counter(t.state for t in trials) == {TrialState.COMPLETE: per_act}
        assert sorted(num for a, num in handed if a == act) == [t.number for t in trials]
    assert searcher.remaining == {act: 0 for act in studies}
    pool = searcher._pool
    assert pool is not None
    assert Counter(t.state for t in pool.get_trials(deepcopy=False)) == {
        TrialState.COMPLETE: per_act * len(studies)
    }


def test_a_failed_cohort_gives_its_budget_back_to_a_lookahead_searcher(
    base_spec: dict[str, Any],
) -> None:
    _spec(base_spec)
    base_spec["budget"] = {"trials_per_activation": 4, "cohort_size": 2}
    spec = parse_spec(base_spec)
    searcher, studies = _searcher(spec, pooled=True, lookahead=True)
    configs: dict[str, dict[str, Any]] = {}
    answers: list[Any] = []

    def ask(tid: str) -> bool:
        config = searcher.suggest(tid)
        answers.append(config if not isinstance(config, dict) else "cohort")
        if isinstance(config, dict):
            configs[tid] = config
        return isinstance(config, dict)

    try:
        assert ask("t1") and ask("t2")
        searcher.on_trial_complete("t1", error=True)  # its budget is asked again
        running, n = ["t2"], 2
        while True:
            while len(running) < 2 and CohortSearcher.FINISHED not in answers:
                n += 1
                if not ask(f"t{n}"):
                    break
                running.append(f"t{n}")
            if not running:
                break
            tid = running.pop(0)
            searcher.on_trial_complete(tid, {"members": _members(configs[tid], None)})
    finally:
        searcher.close()
    assert answers.count(CohortSearcher.FINISHED) == 1 and answers[-1] == CohortSearcher.FINISHED
    for study in studies.values():
        states = Counter(t.state for t in study.get_trials(deepcopy=False))
        expected = spec.budget.trials_per_activation
        assert states[TrialState.COMPLETE] == expected
        assert set(states) <= {TrialState.COMPLETE, TrialState.FAIL}
    failed = [t for s in studies.values() for t in s.get_trials(deepcopy=False)]
    assert sum(t.state == TrialState.FAIL for t in failed) == spec.budget.cohort_size


class _AskFailsAhead(CohortSearcher):
    """The real searcher, whose second ask (the first one made ahead) fails, as a lost
    journal file would make it fail."""

    asks = 0

    def _ask_cohort(self) -> Any:
        self.asks += 1
        if self.asks == 2:
            raise RuntimeError("the journal went away")
        return super()._ask_cohort()


def test_a_failed_ask_ahead_never_stops_a_finished_cohort_from_being_told(
    base_spec: dict[str, Any],
) -> None:
    spec = _spec(base_spec)
    searcher, studies = _searcher(spec, pooled=False, lookahead=True, cls=_AskFailsAhead)
    try:
        first = searcher.suggest("t1")
        assert isinstance(first, dict)
        searcher.on_trial_complete("t1", {"members": _members(first, None)})
        states = {
            _trial_of(studies, first["activation"], m["number"]).state for m in first["members"]
        }
        assert states == {TrialState.COMPLETE}
        # The error surfaces where a synchronous ask's would: at the next suggest.
        with pytest.raises(RuntimeError, match="journal went away"):
            searcher.suggest("t2")
    finally:
        searcher.close()
