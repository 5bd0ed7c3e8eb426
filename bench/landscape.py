"""A spec's landscape by exhaustive grid: where each activation converges fastest, for reference.

    python bench/landscape.py [bench/canonical.yaml] [--lrs 37] [--jobs 2]
                              [--compare DIR/results.json] [--out grid.jsonl]

Trains every (activation, depth, initializer) of the spec's space with ``--lrs`` learning
rates log-spaced over its lr range, through the workers' own `search.trainable.run_cohort`
(one cohort per activation and depth), with the seed a search gives its runs (seed index 0),
the same data and the same data order, and no early stopping. It prints each activation's
fewest steps to target on the grid and where it is, then, with ``--compare`` (the
results.json of bench/throughput.py), each stack's best relative to it.

A search of 64 trials samples this landscape; the grid's optimum is the fixed reference its
bests can be read against (the textbook run's own bests move by a third between runs). It
is an upper bound on the true optimum: a learning rate between two grid points may converge
a little sooner. The canonical grid (4 x 6 x 2 x 37 = 1,776 runs) takes about 8 CPU minutes.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def grid_lrs(low: float, high: float, n: int) -> list[float]:
    """n >= 2 learning rates log-spaced from low to high, both included."""
    lo, hi = math.log10(low), math.log10(high)
    return [10 ** (lo + (hi - lo) * i / (n - 1)) for i in range(n)]


@functools.cache
def _setup(spec_path: str) -> tuple[Any, Any]:
    """The spec and the worker context, once per process (every column shares them)."""
    import torch

    from models.datasets import load_dataset
    from search.orchestrate import worker_context
    from search.spec import load_spec

    torch.set_num_threads(1)
    spec = load_spec(spec_path)
    data = load_dataset(spec.dataset.name, spec.seed, spec.dataset.validation_fraction)
    return spec, worker_context(spec, data)


def train_column(spec_path: str, activation: str, depth: int, lrs: list[float]) -> list[dict]:
    """One cohort: every initializer x learning rate at this activation and depth."""
    from search.space import member_seed
    from search.trainable import run_cohort

    spec, context = _setup(spec_path)
    seed = member_seed(spec, 0)
    members = [
        {"init": init, "lr": lr, "seed": seed} for init in spec.space.initializers for lr in lrs
    ]
    optimizer = spec.space.optimizers[0]
    config = {"activation": activation, "depth": depth, "optimizer": optimizer, "members": members}
    report = run_cohort(config, context)
    rows = []
    for member, result in zip(members, report["members"], strict=True):
        summary = result["summary"]
        rows.append(
            {
                "activation": activation,
                "depth": depth,
                "init": member["init"],
                "lr": member["lr"],
                "reached": bool(summary["reached"]),
                "steps_to_target": summary["steps_to_target"],
                "diverged": bool(summary["diverged"]),
            }
        )
    return rows


def optimum(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per activation: the reached run with the fewest steps (ties: the lower lr)."""
    best: dict[str, dict[str, Any]] = {}
    for r in rows:
        if not r["reached"]:
            continue
        cur = best.get(r["activation"])
        key = (r["steps_to_target"], r["lr"])
        if cur is None or key < (cur["steps_to_target"], cur["lr"]):
            best[r["activation"]] = r
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("spec", nargs="?", default=str(REPO / "bench" / "canonical.yaml"))
    parser.add_argument("--lrs", type=int, default=37, help="learning rates per column")
    parser.add_argument("--jobs", type=int, default=2, help="processes")
    parser.add_argument("--compare", default=None, help="bench/throughput.py results.json")
    parser.add_argument("--out", default=None, help="write every run as JSON lines")
    args = parser.parse_args()

    from search.errors import SpecError
    from search.spec import load_spec

    try:
        spec = load_spec(args.spec)
    except SpecError as err:
        parser.exit(2, f"error: {err}\n")
    if args.lrs < 2:
        parser.exit(2, "error: --lrs must be at least 2\n")
    space = spec.space
    lrs = grid_lrs(space.lr.low, space.lr.high, args.lrs)
    columns = [
        (act, depth)
        for act in space.activations
        for depth in range(space.depth.low, space.depth.high + 1)
    ]
    with ProcessPoolExecutor(max(1, args.jobs)) as pool:
        futures = [
            pool.submit(train_column, str(Path(args.spec).resolve()), a, d, lrs) for a, d in columns
        ]
        rows = [row for f in futures for row in f.result()]
    if args.out:
        Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    best = optimum(rows)
    print(
        f"{len(rows)} runs: {len(space.activations)} activations x {len(columns) // len(space.activations)} depths x {len(space.initializers)} initializers x {args.lrs} learning rates"
    )
    for act in space.activations:
        reached = [r for r in rows if r["activation"] == act and r["reached"]]
        b = best.get(act)
        where = (
            f"{b['steps_to_target']} steps (depth {b['depth']}, {b['init']}, lr {b['lr']:.3g})"
            if b
            else "never reached"
        )
        print(
            f"grid optimum {act:8s} {where}; {len(reached)} of {len(rows) // len(space.activations)} runs reach"
        )
    if args.compare:
        stacks = json.loads(Path(args.compare).read_text())
        for stack in stacks:
            cells = []
            for act in space.activations:
                got, ref = stack["best_steps"].get(act), best.get(act)
                if got is None or ref is None:
                    cells.append(f"{act} {got if got is not None else '-'}")
                else:
                    ref_steps = ref["steps_to_target"]
                    cells.append(f"{act} {got} ({(got - ref_steps) / ref_steps:+.0%})")
            print(f"{stack['stack']:9s} bests vs the grid optimum: " + ", ".join(cells))


if __name__ == "__main__":
    main()
