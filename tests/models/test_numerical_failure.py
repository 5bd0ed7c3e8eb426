"""Numerical failure inside a cohort: NaN, +inf and -inf losses at any step, in any member.

A poisoned member is recorded as diverged at exactly the poisoned step, its curve up to that
window is the clean run's, and every other member's result is bit-identical to a run of the
cohort without the poisoned members. The poison goes through the autograd graph
(`models.train.LossFault`), so the non-finite gradient reaches the member's parameters (and
Adam's or momentum's state) the way a real overflow does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor

from models import CohortSpec, Convergence, Member, RunResult, load_dataset, score, train_cohort
from models.datasets import Dataset
from models.train import LossFault

CONV = Convergence(target_loss=0.3, max_steps=150, eval_every=25)
# Slow enough that no member reaches the target before max_steps (so every step can be hit),
# with different inits and seeds (members differ in everything a member owns).
MEMBERS = (
    Member("auto", 0.004, 0),
    Member("xavier_normal", 0.006, 1),
    Member("orthogonal", 0.002, 2),
    Member("kaiming_uniform", 0.005, 3),
)
POISONS = {"nan": math.nan, "+inf": math.inf, "-inf": -math.inf}


def _cohort(optimizer: str, members: Sequence[Member]) -> CohortSpec:
    lr_scale = {"sgd": 10.0, "momentum": 1.0, "adam": 0.1}[optimizer]
    scaled = [Member(m.init, m.lr * lr_scale, m.seed) for m in members]
    return CohortSpec("tanh", depth=2, width=16, optimizer=optimizer, members=tuple(scaled))


def _outcome(r: RunResult) -> tuple[object, ...]:
    return (r.steps, r.train_loss, r.train_accuracy, r.summary, r.val_loss, r.val_accuracy)


@cache
def _data() -> Dataset:
    return load_dataset("digits")


@cache
def _clean(optimizer: str, without: frozenset[int]) -> tuple[RunResult, ...]:
    kept = [m for i, m in enumerate(MEMBERS) if i not in without]
    return tuple(train_cohort(_data(), _cohort(optimizer, kept), CONV))


def _poison(hits: dict[int, tuple[int, float]]) -> LossFault:
    """fault(step, active, losses): member -> (step, value) multiplies that loss by value."""

    def fault(step: int, active: Sequence[int], losses: Tensor) -> Tensor:
        scale = [hits[m][1] if m in hits and hits[m][0] == step else 1.0 for m in active]
        if all(s == 1.0 for s in scale):
            return losses
        return losses * torch.tensor(scale, dtype=losses.dtype, device=losses.device)

    return fault


poison_cases = st.fixed_dictionaries(
    {
        "optimizer": st.sampled_from(["sgd", "momentum", "adam"]),
        "hits": st.dictionaries(
            st.integers(0, len(MEMBERS) - 1),
            st.tuples(st.integers(1, CONV.max_steps), st.sampled_from(sorted(POISONS))),
            min_size=1,
            max_size=2,
        ),
    }
)


@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(poison_cases)
def test_non_finite_loss_at_any_step_in_any_member(case: dict[str, object]) -> None:
    torch.set_num_threads(1)
    optimizer = case["optimizer"]
    assert isinstance(optimizer, str)
    raw_hits = case["hits"]
    assert isinstance(raw_hits, dict)
    hits = {m: (step, POISONS[name]) for m, (step, name) in raw_hits.items()}
    clean = _clean(optimizer, frozenset())
    poisoned = train_cohort(_data(), _cohort(optimizer, MEMBERS), CONV, loss_fault=_poison(hits))
    assert [r.member for r in poisoned] == [r.member for r in clean]
    for m, (step, _) in hits.items():
        r, base = poisoned[m], clean[m]
        assert not base.summary.reached and not base.summary.diverged  # every step is reachable
        window_end = -(-step // CONV.eval_every) * CONV.eval_every
        assert r.summary.diverged and not r.summary.reached
        assert r.summary.diverged_step == step  # the exact step, not the evaluation point
        assert r.summary.steps_trained == window_end and r.steps[-1] == window_end
        assert not math.isfinite(r.train_loss[-1])
        # Up to the poisoned window, the member's own curve is the clean one.
        assert r.train_loss[:-1] == base.train_loss[: len(r.train_loss) - 1]
        assert r.val_loss is None and r.val_accuracy is None
        s = score(r.summary, CONV)
        assert math.isfinite(s) and s > 51 * CONV.max_steps
        for value in (r.summary.final_loss, r.summary.best_loss):
            # No finite point at all (poisoned in the first window): the initial loss stands in.
            assert math.isfinite(value) or step <= CONV.eval_every
    # The others: bit-identical to a cohort that never had the poisoned members.
    others = [i for i in range(len(MEMBERS)) if i not in hits]
    without = _clean(optimizer, frozenset(hits))
    assert [_outcome(poisoned[i]) for i in others] == [_outcome(r) for r in without]


def test_real_overflow_is_diverged_and_isolated() -> None:
    """No seam: an lr so large that plain SGD overflows to inf/NaN within the first window."""
    torch.set_num_threads(1)
    wild = Member("auto", 1e6, 7)
    calm = list(MEMBERS[:2])
    spec = CohortSpec("relu", 2, 16, "sgd", members=(calm[0], wild, calm[1]))
    with_wild = train_cohort(_data(), spec, CONV)
    without = train_cohort(_data(), CohortSpec("relu", 2, 16, "sgd", members=tuple(calm)), CONV)
    r = with_wild[1]
    assert r.summary.diverged and r.summary.steps_trained == CONV.eval_every
    assert r.summary.diverged_step is not None and 1 <= r.summary.diverged_step <= 25
    assert not math.isfinite(r.train_loss[-1])
    assert [_outcome(x) for x in (with_wild[0], with_wild[2])] == [_outcome(x) for x in without]
