"""Pooled sampling: one model-based sampler that learns from every activation's trials.

Each activation keeps its own Optuna study (its budget, its trials, what MLflow links to),
but with ``sampler.pooled`` the configurations are drawn by one more sampler over an
in-memory "pool" study that holds every activation's trials with the activation as a fixed
parameter -- what one joint study over (activation, depth, init, lr) would learn. A slow
activation's later cohorts then start where the others found fast convergence, instead of
each activation spending its whole budget rediscovering the learning-rate band on its own.

The pool is derived data: it is rebuilt from the per-activation studies when a search
resumes, and every pool trial has exactly one twin in its activation's study (same params,
same value), asked with those params fixed. Nothing is written to storage for it.
"""

from __future__ import annotations

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from search.spec import SearchSpec

__all__ = ["POOL_PARAM", "completed", "make_sampler", "pooled_study"]

POOL_PARAM = "activation"
"""The pool's extra parameter: always fixed to the activation being asked for."""


def make_sampler(spec: SearchSpec, stratum: str) -> optuna.samplers.BaseSampler:
    """The sampler of one stratum's study (an activation, or ``pool``)."""
    from search.space import derive_seed

    seed = derive_seed(spec.seed, "sampler", stratum)
    name = spec.sampler.name
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=spec.sampler.n_startup_trials)
    # Optuna's TPE defaults (5.x: multivariate, constant liar): the liar keeps a cohort's
    # members, asked together before any result, from piling onto one point.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=spec.sampler.n_startup_trials)


def pooled_study(spec: SearchSpec, studies: dict[str, optuna.Study]) -> optuna.Study:
    """The in-memory pool with every completed trial of ``studies`` (a resume starts warm)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pool = optuna.create_study(direction="minimize", sampler=make_sampler(spec, "pool"))
    activation = CategoricalDistribution(list(spec.space.activations))
    for act, study in studies.items():
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            pool.add_trial(
                create_trial(
                    params={POOL_PARAM: act, **t.params},
                    distributions={POOL_PARAM: activation, **t.distributions},
                    value=t.value,
                )
            )
    return pool


def completed(pool: optuna.Study) -> int:
    """How many trials of the pool have a result."""
    return len(pool.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
