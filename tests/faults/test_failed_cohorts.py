"""What the searcher does with cohorts that failed every attempt Tune gave them (no Ray needed).

Tune tells the searcher `on_trial_complete(error=True)` once a cohort has used up
FailureConfig.max_failures; the Optuna study is real (in memory).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import optuna
from ray.tune.search import Searcher

from search.orchestrate import open_studies
from search.searcher import MAX_REASKED_COHORTS, CohortOutcome, CohortSearcher
from search.spec import parse_spec


def test_failed_cohorts_are_told_fail_asked_again_then_given_up(tiny_spec: dict[str, Any]) -> None:
    spec = parse_spec(tiny_spec)  # relu and tanh, 4 trials each, cohorts of 2
    studies, remaining = open_studies(spec, optuna.storages.InMemoryStorage())
    done: list[CohortOutcome] = []
    searcher = CohortSearcher(
        spec=spec, studies=studies, remaining=remaining, on_cohort_done=done.append
    )
    running: list[str] = []
    answers: list[Any] = []
    n = 0
    # Two slots, like Tune: fill them, fail the oldest cohort, ask again; until FINISHED.
    while True:
        while len(running) < 2:
            n += 1
            config = searcher.suggest(f"t{n}")
            answers.append(config if not isinstance(config, dict) else "cohort")
            if not isinstance(config, dict):
                break
            running.append(f"t{n}")
        if config == Searcher.FINISHED:
            break
        assert running, "neither a cohort nor FINISHED with nothing running"
        searcher.on_trial_complete(running.pop(0), error=True)

    size = spec.budget.cohort_size
    per_act = spec.budget.trials_per_activation // size + MAX_REASKED_COHORTS
    assert len(done) == 2 * per_act and all(o.error for o in done)
    # While a failing cohort could still give budget back, Tune is told "not now", not FINISHED.
    assert None in answers and answers[-1] == Searcher.FINISHED
    assert answers.count(Searcher.FINISHED) == 1
    given_up = (per_act - MAX_REASKED_COHORTS) * size
    assert searcher.lost == {"relu": given_up, "tanh": given_up}
    for study in studies.values():
        states = Counter(t.state for t in study.get_trials(deepcopy=False))
        assert states == {optuna.trial.TrialState.FAIL: per_act * size}
    for outcome in done:
        assert all(m.result is None and m.value is None for m in outcome.members)
