"""The fast path's correctness: a config trained in a cohort or alone gives the same outcome."""

from __future__ import annotations

import math
import random

from models import CohortSpec, Convergence, Member, load_dataset
from models.agreement import compare_alone_vs_cohort, same_outcome

CONV = Convergence(target_loss=0.3, max_steps=400, eval_every=25)


def _cohorts() -> list[CohortSpec]:
    rng = random.Random(0)
    cohorts = []
    for activation in ("relu", "gelu", "elu", "tanh"):
        members = tuple(
            Member(
                init=rng.choice(["kaiming_normal", "xavier_normal", "auto"]),
                lr=math.exp(rng.uniform(math.log(1e-3), math.log(2.0))),
                seed=rng.randrange(2**31),
            )
            for _ in range(5)
        )
        cohorts.append(
            CohortSpec(activation, depth=3, width=32, optimizer="momentum", members=members)
        )
    return cohorts


def test_small_spec_agreement_is_at_least_95_percent() -> None:
    report = compare_alone_vs_cohort(load_dataset("digits"), _cohorts(), CONV)
    assert report.n == 20
    outcomes = {(c.alone.summary.reached, c.alone.summary.diverged) for c in report.comparisons}
    assert len(outcomes) >= 2  # the sample mixes reached, censored and diverged configs
    assert report.fraction >= 0.95, [(c.activation, c.member) for c in report.disagreements]


def test_same_outcome_rule() -> None:
    import dataclasses

    (c,) = compare_alone_vs_cohort(
        load_dataset("digits"),
        [CohortSpec("relu", 2, 32, "sgd", members=(Member("auto", 0.1, 0),))],
        CONV,
    ).comparisons
    r = c.alone
    assert r.summary.reached and same_outcome(r, r, 25)
    later = dataclasses.replace(
        r, summary=dataclasses.replace(r.summary, steps_to_target=r.summary.steps_to_target + 25)
    )
    much_later = dataclasses.replace(
        r, summary=dataclasses.replace(r.summary, steps_to_target=r.summary.steps_to_target + 50)
    )
    censored = dataclasses.replace(
        r, summary=dataclasses.replace(r.summary, reached=False, steps_to_target=None)
    )
    assert same_outcome(r, later, 25) and not same_outcome(r, much_later, 25)
    assert not same_outcome(r, censored, 25) and same_outcome(censored, censored, 25)


def test_mixed_depth_cohort_agrees_with_each_member_alone() -> None:
    """Identity-padded members train exactly as their own shallower network."""
    rng = random.Random(1)
    cohorts = []
    for activation in ("relu", "gelu", "tanh", "prelu"):
        members = tuple(
            Member(
                init=rng.choice(["kaiming_normal", "xavier_normal", "auto"]),
                lr=math.exp(rng.uniform(math.log(1e-2), math.log(1.0))),
                seed=rng.randrange(2**31),
                depth=depth,
            )
            for depth in (1, 2, 3, 4, 2)
        )
        cohorts.append(
            CohortSpec(activation, depth=4, width=32, optimizer="momentum", members=members)
        )
    report = compare_alone_vs_cohort(load_dataset("digits"), cohorts, CONV)
    assert report.n == 20
    assert {c.depth for c in report.comparisons} == {1, 2, 3, 4}
    assert report.fraction >= 0.95, [(c.activation, c.member) for c in report.disagreements]
    # Stronger than the outcome rule: the loss curves match to float tolerance.
    for c in report.comparisons:
        assert c.cohort.steps == c.alone.steps
        for a, b in zip(c.cohort.train_loss, c.alone.train_loss, strict=True):
            assert math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6) or (
                not math.isfinite(a) and not math.isfinite(b)
            ), (c.activation, c.member, a, b)
