"""Adapter between Ray Tune and Optuna: one study per activation, cohorts as Tune trials.

Sampling stays on the driver. Each Tune trial is a cohort: up to `cohort_size` Optuna
trials of one activation that share the optimizer, and the depth too unless cohorts mix
depths (asked as partially fixed trials, so the sampler still draws the rest for each),
trained as one batched model. Each Optuna
trial is `seeds` members of the cohort, member i seeded with `member_seed(spec, i)` (paired
across activations and configurations). Optuna is told one finite value per trial: the
censoring-aware aggregate of its seeds (`search.stats.trial_score`: a Kaplan-Meier median).
With ``sampler.pooled`` the configurations come from one pooled sampler over every
activation's trials (search.pool) and are asked in the activation's study with all their
params fixed, so each study still holds exactly its own trials.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import optuna
from ray.tune.search import Searcher

from search.design import latin_hypercube
from search.pool import POOL_PARAM, completed
from search.space import TrialParams, derive_seed, member_seed, suggest
from search.spec import SearchSpec
from search.stats import SeedRuns, TrialAggregate, aggregate_trial
from search.trainable import cohort_config

logger = logging.getLogger(__name__)

# A score no real run produces (see models.convergence.score: at most ~103 * max_steps);
# used only if a value is somehow not finite, so Optuna never receives NaN or inf.
WORST_SCORE_FACTOR = 1000.0

# A cohort that failed every attempt Tune gave it (worker killed, node lost) has its trials
# told FAIL and its budget asked again with fresh configurations, at most this many times
# per activation: past that the failure is taken as systematic and the budget is given up
# (`CohortSearcher.lost`), so a trainable that always crashes cannot loop forever.
MAX_REASKED_COHORTS = 2


@dataclass(frozen=True)
class MemberOutcome:
    """One Optuna trial: its paired seeds' results and the one value Optuna was told."""

    params: TrialParams
    seed: int
    """The seed of run index 0."""
    result: dict[str, Any] | None
    """Run index 0's RunResult as a dict plus its "score"; None when the cohort failed."""
    value: float | None
    """What Optuna was told (None: told FAIL)."""
    runs: tuple[dict[str, Any], ...] = ()
    """Every seed's result dict, in seed-index order (runs[0] is `result`)."""
    seeds: tuple[int, ...] = ()
    """The seed of each run index."""
    aggregate: TrialAggregate | None = None
    """The censoring-aware summary over seeds (None when the cohort failed)."""


def unusable(result: Any, max_steps: int) -> str | None:
    """Why one member's result dict cannot be told to Optuna, or None if it can.

    Results cross a process boundary from workers: a broken or mismatched worker must fail its
    trial (told FAIL, child run FAILED), not crash the driver mid-search and leave the study
    with RUNNING trials (a NaN step made `km_median` divide by zero). Non-finite *losses* are
    fine in a diverged run: that is what diverging means.
    """
    try:
        s = result["summary"]
        reached, diverged = s["reached"], s["diverged"]
        if not isinstance(reached, bool) or not isinstance(diverged, bool):
            return "reached and diverged must be booleans"
        if reached and diverged:
            return "both reached and diverged"
        steps = float(s["steps_trained"])
        if not (math.isfinite(steps) and 0 <= steps <= max_steps):
            return f"steps_trained is {steps}"
        if reached:
            target = s["steps_to_target"]
            t = math.nan if target is None else float(target)
            if not (math.isfinite(t) and 0 < t <= steps):
                return f"reached, but steps_to_target is {target}"
        value = float(result["score"])
        if not math.isfinite(value):
            return f"score is {value}"
        # Losses are not told to Optuna (absent is fine); present ones must fit the outcome.
        losses = [float(s[k]) for k in ("initial_loss", "final_loss", "best_loss") if k in s]
        if not diverged and not all(math.isfinite(v) for v in losses):
            return "a non-finite loss in a run that did not diverge"
    except (KeyError, TypeError, ValueError) as err:
        return f"malformed result ({type(err).__name__}: {err})"
    return None


def seed_runs(results: list[dict[str, Any]], max_steps: int) -> SeedRuns:
    """The per-seed outcomes of one trial from its members' result dicts."""
    summaries = [r["summary"] for r in results]
    return SeedRuns(
        steps=tuple(
            float(s["steps_to_target"] if s["reached"] else s["steps_trained"]) for s in summaries
        ),
        reached=tuple(bool(s["reached"]) for s in summaries),
        diverged=tuple(bool(s["diverged"]) for s in summaries),
        scores=tuple(float(r["score"]) for r in results),
        max_steps=max_steps,
    )


@dataclass(frozen=True)
class CohortOutcome:
    tune_trial_id: str
    study: str
    members: tuple[MemberOutcome, ...]
    report: dict[str, Any] = field(default_factory=dict)
    """Worker metadata (node, hostname, device, timings); empty on failure."""
    error: bool = False


@dataclass
class _Pending:
    activation: str
    trials: list[tuple[TrialParams, optuna.trial.Trial]]
    pooled: list[optuna.trial.Trial] = field(default_factory=list)
    """Each trial's twin in the pool (search.pool), in the same order; empty without one."""


class CohortSearcher(Searcher):
    """A Tune Searcher that proposes cohorts from per-activation Optuna studies."""

    def __init__(
        self,
        *,
        spec: SearchSpec,
        studies: dict[str, optuna.Study],
        remaining: dict[str, int],
        on_cohort_done: Callable[[CohortOutcome], None],
        on_suggest: Callable[[], None] | None = None,
        on_cohort_measured: Callable[[CohortOutcome], object] | None = None,
        best: dict[str, int] | None = None,
        pool: optuna.Study | None = None,
        lookahead: bool = False,
    ) -> None:
        super().__init__(metric="cohort_best_score", mode="min")
        self._spec = spec
        self._studies = studies
        self._remaining = dict(remaining)
        self._on_cohort_done = on_cohort_done
        self._on_suggest = on_suggest
        self._on_cohort_measured = on_cohort_measured
        self._pending: dict[str, _Pending] = {}
        self._order = list(spec.space.activations)
        self._turn = 0
        self._reasked: dict[str, int] = {}
        self.lost: dict[str, int] = {}
        """Trials per activation whose cohort failed and whose budget was not asked again."""
        self.driver_seconds = {"suggest": 0.0, "complete": 0.0, "ask_ahead": 0.0}
        """Driver time spent in Optuna asks (suggest; ask_ahead: in the helper thread) and
        tells + hand-off (complete)."""
        self._design_pos: dict[str, int] = {}
        """Trials of each activation asked so far, for the start-up design."""
        self._best: dict[str, int] = dict(best or {})
        """Fewest steps to target per activation so far (the early-stopping bar); a resumed
        search starts from what its earlier trials reached."""
        self._pool = pool
        """The pooled sampler's study (search.pool), or None: each study samples alone."""
        self._lookahead = lookahead
        self._executor: ThreadPoolExecutor | None = None
        self._ahead: Future[_Pending | None] | None = None
        """The next cohort, asked ahead in the helper thread (lookahead only)."""

    @property
    def remaining(self) -> dict[str, int]:
        return dict(self._remaining)

    @property
    def best(self) -> dict[str, int]:
        """Fewest steps to target per activation so far (the early-stopping bar)."""
        return dict(self._best)

    # Tune pickles its searcher into its experiment state. Ours is rebuilt from the Optuna
    # journal and MLflow on resume (`actsweep run` again), so live handles (storage locks,
    # the tracker callback) are left out rather than pickled.
    _LIVE = (
        "_studies",
        "_on_cohort_done",
        "_on_suggest",
        "_on_cohort_measured",
        "_pending",
        "_pool",
        "_executor",
        "_ahead",
    )

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in self._LIVE}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._studies = {}
        self._pending = {}
        self._on_cohort_done = lambda outcome: None
        self._on_suggest = None
        self._on_cohort_measured = None
        self._pool = None
        self._executor = None
        self._ahead = None

    def save(self, checkpoint_path: str) -> None:
        # Informational only: the remaining budget per activation at checkpoint time.
        with open(checkpoint_path, "w") as f:
            json.dump({"search_id": self._spec.search_id, "remaining": self._remaining}, f)

    def restore(self, checkpoint_path: str) -> None:
        raise NotImplementedError(
            "actsweep resumes from the Optuna journal and MLflow: run the same command again"
        )

    def _next_activation(self) -> str | None:
        # Round-robin over strata that still have budget, so every activation progresses
        # at the same pace and its sampler gets feedback between its cohorts.
        for _ in range(len(self._order)):
            act = self._order[self._turn % len(self._order)]
            self._turn += 1
            if self._remaining[act] > 0:
                return act
        return None

    @contextmanager
    def _timed(self, key: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.driver_seconds[key] += time.perf_counter() - t0

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        with self._timed("suggest"):
            return self._suggest(trial_id)

    def _suggest(self, trial_id: str) -> dict[str, Any] | None:
        cohort = self._take_ahead()
        if cohort is None:
            cohort = self._ask_cohort()
        if cohort is None:
            if self._pending:
                # Not finished yet: a running cohort that fails gives its budget back, and
                # Tune never asks a searcher again once it has answered FINISHED.
                return None
            # Tune's documented "no more trials" sentinel is a str; its type hints omit it.
            return Searcher.FINISHED  # type: ignore[return-value]
        config = self._hand_out(trial_id, cohort)
        if self._lookahead:
            self._ask_ahead()
        return config

    # Lookahead: the next cohort is asked in a helper thread right after this one is handed
    # out, while the cohorts train, so a worker that frees gets its next cohort at once
    # instead of after the asks (TPE on the pool, journal writes: 0.1-0.2 s per cohort on a
    # busy 2-CPU machine). That cohort has not seen the result that freed the worker (it
    # lags one completion), which replays of the canonical search over 8 seeds showed to
    # leave the bests unchanged on average. Study operations never overlap: every call that
    # touches the studies waits for the helper first.

    def _ask_ahead(self) -> None:
        if not any(self._remaining.values()):
            return  # nothing left to ask (a failed cohort's budget is asked when it returns)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="actsweep-ask-ahead")
        self._ahead = self._executor.submit(self._timed_ask)

    def _timed_ask(self) -> _Pending | None:
        with self._timed("ask_ahead"):
            return self._ask_cohort()

    def _settle(self) -> None:
        """Wait for an ask in flight; its cohort (or its error) stays ahead for `suggest`,
        so a failing ask never stops a completed cohort from being spooled and told."""
        if self._ahead is not None:
            wait([self._ahead])

    def _take_ahead(self) -> _Pending | None:
        ahead, self._ahead = self._ahead, None
        return None if ahead is None else ahead.result()

    def close(self) -> None:
        """Wait for an ask in flight and stop the helper thread. A cohort asked ahead and
        never handed out (the search was interrupted) stays RUNNING in its study: a resume
        tells it FAIL and asks its budget again, as for any cohort a dead driver asked."""
        self._settle()
        failure = None if self._ahead is None else self._ahead.exception()
        if failure is not None:
            logger.warning("asking the next cohort ahead failed: %s", failure)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _ask_cohort(self) -> _Pending | None:
        """Ask the next cohort's trials (round-robin over activations with budget left)."""
        activation = self._next_activation()
        if activation is None:
            return None
        study = self._studies[activation]
        size = min(self._spec.budget.cohort_size, self._remaining[activation])
        design = self._design_points(activation, size)
        asked: list[tuple[TrialParams, optuna.trial.Trial]] = []
        pooled: list[optuna.trial.Trial] = []
        mixed = self._spec.mixed_depths
        for k in range(size):
            # Fix what members must share (the optimizer; the depth unless cohorts mix depths,
            # models.mlp); the design or the sampler gives the rest for each member.
            fixed: dict[str, Any] = dict(design[k]) if k < len(design) else {}
            if asked:
                lead = asked[0][0]
                fixed["optimizer"] = lead.optimizer
                if not mixed:
                    fixed["depth"] = lead.depth
            if self._pool is not None:
                twin, fixed = self._ask_pool(activation, fixed)
                pooled.append(twin)
            if fixed and (len(fixed) > 1 or len(self._spec.space.optimizers) > 1 or not asked):
                study.enqueue_trial(fixed)
            trial = study.ask()
            asked.append((suggest(trial, activation, self._spec.space), trial))
        self._remaining[activation] -= size
        return _Pending(activation, asked, pooled)

    def _hand_out(self, trial_id: str, cohort: _Pending) -> dict[str, Any]:
        """Register `cohort` as Tune trial `trial_id` and return its config."""
        self._pending[trial_id] = cohort
        if self._on_suggest is not None:
            self._on_suggest()
        asked = cohort.trials
        lead = asked[0][0]
        # Trial-major order: trial k's seeds are members k * seeds .. (k + 1) * seeds - 1.
        seeds = [member_seed(self._spec, i) for i in range(self._spec.seeds)]
        members = [
            {
                "number": p.number,
                "init": p.init,
                "lr": p.lr,
                "seed": seed,
                "seed_index": i,
                "depth": p.depth,
            }
            for p, _ in asked
            for i, seed in enumerate(seeds)
        ]
        depth = max(p.depth for p, _ in asked)
        config = cohort_config(cohort.activation, depth, lead.optimizer, members)
        if self._spec.budget.early_stopping:
            # A seed still running past the stratum's best (a trial-level KM median) cannot
            # change a median that beats it, so censoring it there is safe for any `seeds`.
            # Read at hand-out, not when the cohort was asked: a lookahead cohort gets the
            # bar of the results that arrived while it waited.
            config["stop_at"] = self._best.get(cohort.activation)
            # The race stops siblings when one member reaches: with several seeds per trial
            # it would censor the winner's own seeds, so it only applies to one-seed trials.
            config["race"] = self._spec.seeds == 1
        return config

    def _ask_pool(
        self, activation: str, fixed: dict[str, Any]
    ) -> tuple[optuna.trial.Trial, dict[str, Any]]:
        """Draw one configuration from the pool (search.pool) with ``fixed`` held; return the
        pool trial and the full configuration its twin in the activation's study gets."""
        assert self._pool is not None
        self._pool.enqueue_trial({POOL_PARAM: activation, **fixed})
        twin = self._pool.ask()
        twin.suggest_categorical(POOL_PARAM, list(self._spec.space.activations))
        p = suggest(twin, activation, self._spec.space)
        return twin, {"depth": p.depth, "init": p.init, "lr": p.lr, "optimizer": p.optimizer}

    def _design_points(self, activation: str, size: int) -> list[dict[str, Any]]:
        """The start-up design's next points for this activation (search.design), if any."""
        sampler = self._spec.sampler
        if sampler.startup != "lhs":
            return []
        if self._pool is not None and completed(self._pool) >= sampler.n_startup_trials:
            return []  # the pooled sampler has seen enough of the space, whoever ran it
        n = min(sampler.n_startup_trials, self._spec.budget.trials_per_activation)
        if activation not in self._design_pos:
            # Resuming: trials already in the study used the design's first points.
            self._design_pos[activation] = len(self._studies[activation].get_trials(deepcopy=False))
        pos = self._design_pos[activation]
        if pos >= n:
            return []
        points = latin_hypercube(
            self._spec.space, n, derive_seed(self._spec.seed, "design", activation)
        )[pos : pos + size]
        self._design_pos[activation] = pos + size
        return points

    def note_best(self, activation: str, steps: int) -> None:
        """Record a trial that reached the target (its steps_to_target: KM median over seeds)."""
        cur = self._best.get(activation)
        self._best[activation] = steps if cur is None else min(cur, steps)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        with self._timed("complete"):
            self._complete(trial_id, result, error)

    def _complete(self, trial_id: str, result: dict[str, Any] | None, error: bool) -> None:
        self._settle()  # the helper's asks and these tells never overlap
        pending = self._pending.pop(trial_id, None)
        if pending is None:
            return
        study = self._studies[pending.activation]
        results = (result or {}).get("members")
        n_seeds = self._spec.seeds
        seeds = tuple(member_seed(self._spec, i) for i in range(n_seeds))
        failed = error or not results or len(results) != len(pending.trials) * n_seeds
        if failed:
            act = pending.activation
            if self._reasked.get(act, 0) < MAX_REASKED_COHORTS:
                self._reasked[act] = self._reasked.get(act, 0) + 1
                self._remaining[act] += len(pending.trials)
            else:
                self.lost[act] = self.lost.get(act, 0) + len(pending.trials)
        outcomes = []
        for k, (params, _) in enumerate(pending.trials):
            if failed:
                outcomes.append(MemberOutcome(params, seeds[0], None, None, seeds=seeds))
                continue
            assert results is not None
            runs = results[k * n_seeds : (k + 1) * n_seeds]
            max_steps = self._spec.convergence.max_steps
            reasons = [why for r in runs if (why := unusable(r, max_steps)) is not None]
            if reasons:
                logger.warning(
                    "%s trial %d: unusable result from the worker (%s); told FAIL",
                    pending.activation,
                    params.number,
                    reasons[0],
                )
                # value None: told FAIL below, after the outcome is spooled.
                outcomes.append(MemberOutcome(params, seeds[0], None, None, seeds=seeds))
                continue
            aggregate = aggregate_trial(seed_runs(runs, self._spec.convergence.max_steps))
            if aggregate.reached and aggregate.steps_to_target is not None:
                self.note_best(pending.activation, int(aggregate.steps_to_target))
            value = float(aggregate.score)
            if not math.isfinite(value):
                value = WORST_SCORE_FACTOR * self._spec.convergence.max_steps
            outcomes.append(
                MemberOutcome(
                    params,
                    int(runs[0]["member"]["seed"]),
                    runs[0],
                    value,
                    runs=tuple(runs),
                    seeds=tuple(int(r["member"]["seed"]) for r in runs),
                    aggregate=aggregate,
                )
            )
        report = {} if failed else {k: v for k, v in (result or {}).items() if k != "members"}
        outcome = CohortOutcome(
            tune_trial_id=trial_id,
            study=study.study_name,
            members=tuple(outcomes),
            report=report,
            error=failed,
        )
        # Write-ahead: the outcome is durable (search.spool) before Optuna counts it, so a
        # driver dying from here on loses nothing that Optuna or MLflow will later miss.
        if self._on_cohort_measured is not None:
            self._on_cohort_measured(outcome)
        for (_, trial), member in zip(pending.trials, outcomes, strict=True):
            if member.value is None:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial, member.value)
        if self._pool is not None:
            for twin, member in zip(pending.pooled, outcomes, strict=True):
                if member.value is None:
                    self._pool.tell(twin, state=optuna.trial.TrialState.FAIL)
                else:
                    self._pool.tell(twin, member.value)
        self._on_cohort_done(outcome)
