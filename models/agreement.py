"""Does batching change results? Train configs inside cohorts and alone, compare outcomes.

Outcome agreement, as the Performance issue defines it: the same `reached`, and when both
reached, steps_to_target within one `eval_every` interval. Bit-for-bit equality is not
promised: batched kernels may sum in another order, and activations built on exp/erf
(elu, gelu, ...) can differ in the last bit with tensor size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from models.convergence import Convergence
from models.datasets import Dataset
from models.train import CohortSpec, Member, RunResult, train_cohort


@dataclass(frozen=True)
class Comparison:
    activation: str
    depth: int
    member: Member
    cohort: RunResult
    alone: RunResult
    agree: bool


@dataclass(frozen=True)
class AgreementReport:
    comparisons: tuple[Comparison, ...]

    @property
    def n(self) -> int:
        return len(self.comparisons)

    @property
    def fraction(self) -> float:
        return sum(c.agree for c in self.comparisons) / self.n if self.n else 1.0

    @property
    def disagreements(self) -> tuple[Comparison, ...]:
        return tuple(c for c in self.comparisons if not c.agree)


def same_outcome(a: RunResult, b: RunResult, eval_every: int) -> bool:
    sa, sb = a.summary, b.summary
    if sa.reached != sb.reached:
        return False
    if not sa.reached:
        return True
    assert sa.steps_to_target is not None and sb.steps_to_target is not None
    return abs(sa.steps_to_target - sb.steps_to_target) <= eval_every


def compare_alone_vs_cohort(
    data: Dataset,
    cohorts: Sequence[CohortSpec],
    conv: Convergence,
    device: str | torch.device = "cpu",
) -> AgreementReport:
    """Train each cohort batched, then each member alone (cohort of one), and compare.

    A member with its own depth (mixed-depth cohort) is trained alone at that depth, as a
    plain network without identity layers.
    """
    out = []
    for cohort in cohorts:
        batched = train_cohort(data, cohort, conv, device=device)
        for member, in_cohort in zip(cohort.members, batched, strict=True):
            (alone,) = train_cohort(data, replace(cohort, members=(member,)), conv, device=device)
            out.append(
                Comparison(
                    activation=cohort.activation,
                    depth=cohort.depth if member.depth is None else member.depth,
                    member=member,
                    cohort=in_cohort,
                    alone=alone,
                    agree=same_outcome(in_cohort, alone, conv.eval_every),
                )
            )
    return AgreementReport(tuple(out))
