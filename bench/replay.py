"""Replay a search on the driver side: actsweep's searcher and real training, no Ray, no MLflow.

    python bench/replay.py [bench/canonical.yaml] [--seeds 0 1 2 3 4 5 6 7]
                           [--set budget.cohort_size=16 ...] [--slots 2] [--lookahead]

For each seed, the spec's search runs through `search.searcher.CohortSearcher` on in-memory
Optuna studies (pooled as the spec says) with `--slots` cohorts in flight, trained one after
the other in this process by the workers' own `search.trainable.run_cohort`, completing in
the order they were handed out. The completion order is fixed, so a replay is repeatable and
two settings can be compared seed by seed without Ray's timing in the way. It prints, per
seed, each activation's best steps_to_target and the training CPU seconds, then the sums over
the seeds: the figures behind the README's cohort-size and lookahead comparisons.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import optuna
import torch

from models.datasets import load_dataset
from search.errors import SpecError
from search.orchestrate import open_studies, worker_context
from search.pool import pooled_study
from search.searcher import CohortSearcher
from search.spec import SearchSpec, load_spec, parse_spec
from search.trainable import run_cohort

REPO = Path(__file__).resolve().parents[1]


def override(spec: SearchSpec, assignments: list[str]) -> SearchSpec:
    """Apply ``section.field=value`` (or ``field=value``) assignments, the value parsed as
    JSON when it parses, and validate the result as any spec is (search.spec.parse_spec)."""
    data = spec.model_dump()
    for item in assignments:
        key, _, raw = item.partition("=")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        *sections, field = key.split(".")
        target = data
        for name in [*sections, field]:
            if not isinstance(target, dict) or name not in target:
                allowed = sorted(target) if isinstance(target, dict) else None
                raise SpecError(f"--set {key}", f"no field {name!r} here", allowed)
            parent, target = target, target[name]
        parent[field] = value
    return parse_spec(data)


def replay(spec: SearchSpec, slots: int, lookahead: bool) -> dict[str, Any]:
    studies, remaining = open_studies(spec, optuna.storages.InMemoryStorage())
    pool = pooled_study(spec, studies) if spec.sampler.pooled else None
    searcher = CohortSearcher(
        spec=spec,
        studies=studies,
        remaining=remaining,
        on_cohort_done=lambda outcome: None,
        pool=pool,
        lookahead=lookahead,
    )
    data = load_dataset(spec.dataset.name, spec.seed, spec.dataset.validation_fraction)
    context = worker_context(spec, data)
    running: list[tuple[str, dict[str, Any]]] = []
    handed = 0
    train_cpu = 0.0
    member_steps = 0

    def fill() -> None:
        nonlocal handed
        while len(running) < slots:
            config = searcher.suggest(f"t{handed + 1}")
            if not isinstance(config, dict):
                return
            handed += 1
            running.append((f"t{handed}", config))

    try:
        fill()
        while running:
            trial_id, config = running.pop(0)
            report = run_cohort(config, context)
            train_cpu += report["train_cpu"]
            member_steps += sum(m["summary"]["steps_trained"] for m in report["members"])
            searcher.on_trial_complete(trial_id, report)
            fill()
    finally:
        searcher.close()
    return {
        "seed": spec.seed,
        "best": dict(sorted(searcher.best.items())),
        "cohorts": handed,
        "member_steps": member_steps,
        "train_cpu_s": round(train_cpu, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("spec", nargs="?", default=str(REPO / "bench" / "canonical.yaml"))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(8)))
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    parser.add_argument("--slots", type=int, default=2, help="cohorts in flight (workers)")
    parser.add_argument("--lookahead", action="store_true", help="as `actsweep run` asks")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    try:
        base = override(load_spec(args.spec), args.set)
    except SpecError as err:
        parser.exit(2, f"error: {err}\n")
    rows = []
    t0 = time.time()
    for seed in args.seeds:
        row = replay(override(base, [f"seed={seed}"]), args.slots, args.lookahead)
        rows.append(row)
        print(json.dumps(row), flush=True)
    acts = sorted({a for r in rows for a in r["best"]})
    never = base.convergence.max_steps  # an activation that never reached counts max_steps
    per = {a: sum(r["best"].get(a, never) for r in rows) for a in acts}
    print(
        f"over {len(rows)} seeds ({time.time() - t0:.0f} s): sum of the bests "
        f"{sum(per.values())} ({', '.join(f'{a} {v}' for a, v in per.items())}); "
        f"training CPU {sum(r['train_cpu_s'] for r in rows):.1f} s; "
        f"member-steps {sum(r['member_steps'] for r in rows)}"
    )


if __name__ == "__main__":
    main()
