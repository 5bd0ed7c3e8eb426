"""Benchmark: the training-time overhead of the mechanism diagnostics at default settings.

Trains the same cohorts with diagnostics off and at the spec's defaults, interleaved side by
side in one process (so machine load hits both alike), and reports the ratio of the median
times. The issue's budget is at most 10 % (ratio <= 1.10). Run:

    .venv/bin/python bench/diagnostics_overhead.py [--repeats 5] [--every 4]

Timings are reported here and never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from models import CohortSpec, Convergence, Member, load_dataset, train_cohort
from models.diagnostics import CohortDiagnostics, DiagnosticsConfig
from search.spec import DiagnosticsSpec

# A cohort like the searches': 8 trials x 3 seeds, long enough that nobody stops early
# (an unreachable target), so both arms train exactly the same number of steps.
ACTIVATIONS = ("relu", "elu", "tanh")
DEPTH = 4
WIDTH = 64
BATCH = 128
CONV = Convergence(target_loss=1e-9, max_steps=500, eval_every=25)


def _members() -> tuple[Member, ...]:
    lrs = [0.01 * 1.5**k for k in range(8)]
    return tuple(Member("auto", lr, seed) for lr in lrs for seed in range(3))


def run(repeats: int, every: int, probe_size: int) -> dict[str, object]:
    torch.set_num_threads(1)
    data = load_dataset("mnist1d")
    members = _members()
    config = DiagnosticsConfig(every=every, probe_size=probe_size)
    times: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(repeats):
        for act in ACTIVATIONS:
            spec = CohortSpec(act, DEPTH, WIDTH, "momentum", batch_size=BATCH, members=members)
            for arm in ("off", "on"):
                hook = (
                    CohortDiagnostics(config, data, [m.lr for m in members])
                    if arm == "on"
                    else None
                )
                start = time.perf_counter()
                train_cohort(data, spec, CONV, on_eval=hook)
                times[arm].append(time.perf_counter() - start)
    off = statistics.median(times["off"])
    on = statistics.median(times["on"])
    # Each on/off pair ran back to back: the median of pair ratios resists load drifting
    # during the benchmark better than the ratio of medians.
    pair_ratio = statistics.median(a / b for a, b in zip(times["on"], times["off"], strict=True))
    return {
        "every": every,
        "probe_size": probe_size,
        "members": len(members),
        "steps": CONV.max_steps,
        "eval_every": CONV.eval_every,
        "median_seconds_off": round(off, 4),
        "median_seconds_on": round(on, 4),
        "ratio_of_medians": round(on / off, 4),
        "median_pair_ratio": round(pair_ratio, 4),
        "overhead_percent": round(100 * (pair_ratio - 1), 2),
        "within_budget": pair_ratio <= 1.10,
    }


def main() -> None:
    defaults = DiagnosticsSpec()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--every", type=int, default=defaults.every)
    parser.add_argument("--probe-size", type=int, default=defaults.probe_size)
    args = parser.parse_args()
    print(json.dumps(run(args.repeats, args.every, args.probe_size), indent=2))


if __name__ == "__main__":
    main()
