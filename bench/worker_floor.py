"""The CPU a Ray Tune worker spends before it can take its first PyTorch training step.

    python bench/worker_floor.py [--workers 2] [--json OUT]

A do-nothing search: `--workers` trials of 1 CPU each, run concurrently by Ray Tune on a
fresh local Ray (`reuse_actors=True`, as both stacks of `bench/throughput.py`). Each trial
imports PyTorch and the training code, reads its worker process's CPU time and reports it.
Nothing is trained, tracked or sampled, so every CPU second it prints is what any stack that
trains with PyTorch inside Tune pays per worker before training starts: the Python
interpreter, Ray's worker start-up, Ray Tune's trainable (its classes are what the actor
unpickles, which imports `ray.tune`), and the imports.

For each worker it prints the CPU seconds at the trial's entry (Ray and Tune plumbing) and
after the imports (the floor). `bench/throughput.py` runs it after both stacks and bounds
the share of worker CPU a stack can spend in training by train / (train + workers x floor).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any


def _floor_trial(config: dict[str, Any]) -> None:
    import os
    import resource

    from ray import tune

    def cpu() -> float:
        u = resource.getrusage(resource.RUSAGE_SELF)
        return u.ru_utime + u.ru_stime

    at_entry = cpu()
    import torch  # noqa: F401

    import models.train  # noqa: F401

    tune.report({"pid": os.getpid(), "cpu_at_entry": at_entry, "cpu_after_imports": cpu()})


def measure(workers: int) -> list[dict[str, float]]:
    import ray
    from ray import tune

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory(prefix="actsweep-floor-") as storage:
            tuner = tune.Tuner(
                tune.with_resources(_floor_trial, {"cpu": 1}),
                param_space={"i": tune.grid_search(list(range(workers)))},
                tune_config=tune.TuneConfig(reuse_actors=True),
                run_config=tune.RunConfig(storage_path=storage, verbose=0),
            )
            results = tuner.fit()
            rows = [dict(results[i].metrics or {}) for i in range(len(results))]
    finally:
        ray.shutdown()
    # One row per worker process (a reused actor would report twice).
    per_pid = {
        int(r["pid"]): {k: r[k] for k in ("cpu_at_entry", "cpu_after_imports")} for r in rows
    }
    return list(per_pid.values())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    rows = measure(args.workers)
    for i, r in enumerate(rows):
        print(
            f"worker {i}: {r['cpu_at_entry']:.2f} CPU s at the trial's entry, "
            f"{r['cpu_after_imports']:.2f} after importing torch and the training code"
        )
    print(f"sum of floors: {sum(r['cpu_after_imports'] for r in rows):.2f} CPU s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
