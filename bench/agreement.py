"""Agreement of the fast path on the canonical spec: each config in a cohort vs alone.

    python bench/agreement.py [bench/canonical.yaml] [--trials-per-activation 16]

Draws the spec's configs (16 per activation on the canonical spec, seeded, log-uniform lr,
depth and init uniform), groups them into cohorts as actsweep does (cohort_size configs of
one activation, of mixed depths when the spec mixes depths, else by (activation, depth)), trains each cohort batched and each config alone with the same seed and data
order, and reports the share whose outcome agrees: the same `reached` and steps_to_target
within one eval_every. Early stopping (race, stop_at) is off on both sides: this measures the
batched numerics, not the search policy.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections import defaultdict
from pathlib import Path

import torch

from models import CohortSpec, Member, load_dataset
from models.agreement import compare_alone_vs_cohort
from search.orchestrate import convergence_of
from search.space import member_seed
from search.spec import load_spec

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("spec", nargs="?", default=str(REPO / "bench" / "canonical.yaml"))
    parser.add_argument("--trials-per-activation", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = load_spec(args.spec)
    s = spec.space
    n = args.trials_per_activation or spec.budget.trials_per_activation
    rng = random.Random(spec.seed)
    configs: dict[str, list[Member]] = defaultdict(list)
    for act in s.activations:
        for _ in range(n):
            depth = rng.randint(s.depth.low, s.depth.high)
            lr = math.exp(rng.uniform(math.log(s.lr.low), math.log(s.lr.high)))
            configs[act].append(Member(rng.choice(s.initializers), lr, member_seed(spec, 0), depth))
    cohorts = []
    size = spec.budget.cohort_size
    for act, members in configs.items():
        if spec.mixed_depths:
            chunks = [members[i : i + size] for i in range(0, len(members), size)]
        else:
            by_depth: dict[int, list[Member]] = defaultdict(list)
            for m in members:
                by_depth[m.depth or 0].append(m)
            chunks = [
                ms[i : i + size]
                for _, ms in sorted(by_depth.items())
                for i in range(0, len(ms), size)
            ]
        for chunk in chunks:
            cohorts.append(
                CohortSpec(
                    act,
                    max(m.depth or 0 for m in chunk),
                    spec.model.width,
                    s.optimizers[0],
                    s.momentum,
                    s.batch_size,
                    tuple(chunk),
                )
            )
    data = load_dataset(spec.dataset.name, spec.seed, spec.dataset.validation_fraction)
    t0 = time.perf_counter()
    report = compare_alone_vs_cohort(data, cohorts, convergence_of(spec))
    mixed = sum(len({m.depth for m in c.members}) > 1 for c in cohorts)
    print(
        f"spec {spec.name}: {report.n} configs in {len(cohorts)} cohorts ({mixed} of mixed "
        f"depths; {time.perf_counter() - t0:.0f} s)"
    )
    reached = sum(c.alone.summary.reached for c in report.comparisons)
    diverged = sum(c.alone.summary.diverged for c in report.comparisons)
    exact = sum(c.alone.summary == c.cohort.summary for c in report.comparisons)
    print(
        f"alone: {reached} reached, {diverged} diverged, {report.n - reached - diverged} censored"
    )
    print(f"agreement (same reached, steps within one eval_every): {report.fraction:.1%}")
    print(f"identical convergence summaries: {exact}/{report.n}")
    for c in report.disagreements:
        print(
            f"  differs: {c.activation} d{c.depth} {c.member} alone={c.alone.summary.steps_to_target} cohort={c.cohort.summary.steps_to_target}"
        )


if __name__ == "__main__":
    main()
