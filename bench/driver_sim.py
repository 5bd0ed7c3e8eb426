"""Driver cost per trial at scale: synthetic trials through the real search path.

    python bench/driver_sim.py [--trials 10000] [--cohort-size 50] [--sampler tpe]

No training: each member's result is a cheap synthetic function of its (depth, init, lr),
but everything else is real: Optuna asks (partially fixed trials) and tells in per-activation
studies on a journal file, Ray Tune trial bookkeeping with the actsweep searcher, and MLflow
child runs written by the tracker to a SQLite store. Prints the driver's cost per trial over
the segments 0-1k, 1k-5k, 5k-10k, split into Optuna, MLflow and the rest (Tune + Ray).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def synthetic_trainable(config: dict[str, Any], context: Any) -> None:
    """Same report shape as search.trainable.tune_trainable, no training."""
    import ray
    from ray import tune

    from models.convergence import summarize
    from models.train import Member, RunResult
    from search.trainable import result_to_dict

    conv = context.convergence
    members = []
    for m in config["members"]:
        # A smooth bowl in (log lr, depth): best near lr 0.1, depth 3.
        badness = (math.log10(m["lr"]) + 1.0) ** 2 + 0.1 * (config["depth"] - 3) ** 2
        loss0 = 2.3
        steps, losses = [], []
        for k in range(1, conv.max_steps // conv.eval_every + 1):
            steps.append(k * conv.eval_every)
            losses.append(loss0 * math.exp(-k / (1.0 + 4.0 * badness)))
            if losses[-1] <= (conv.target_loss or 0.0):
                break
        summary = summarize(steps, losses, None, loss0, conv)
        rr = RunResult(
            member=Member(m["init"], m["lr"], m["seed"]),
            steps=tuple(steps),
            train_loss=tuple(losses),
            train_accuracy=None,
            summary=summary,
            val_loss=losses[-1],
            val_accuracy=None,
            wall_seconds=0.0,
            step_limit=conv.max_steps,
        )
        members.append(result_to_dict(rr, conv))
    now = time.time()
    tune.report(
        {
            "members": members,
            "started_at": now,
            "ended_at": now,
            "hostname": "sim",
            "device": "cpu",
            "node_id": ray.get_runtime_context().get_node_id(),
            "cohort_best_score": min(x["score"] for x in members),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--cohort-size", type=int, default=50)
    parser.add_argument("--sampler", default="tpe", choices=("tpe", "random"))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from search.orchestrate import run_search
    from search.spec import parse_spec

    acts = ["relu", "elu", "gelu", "tanh"]
    spec = parse_spec(
        {
            "name": "driver-sim",
            "dataset": "digits",
            "model": {"width": 8},
            "space": {
                "activations": acts,
                "depth": {"low": 1, "high": 6},
                "initializers": ["kaiming_normal", "xavier_normal"],
                "lr": {"low": 1e-4, "high": 1.0},
            },
            "convergence": {"target_loss": 0.1, "max_steps": 500, "eval_every": 25},
            "budget": {
                "trials_per_activation": args.trials // len(acts),
                "cohort_size": args.cohort_size,
                "early_stopping": False,
            },
            "sampler": {"name": args.sampler, "n_startup_trials": 20},
        }
    )
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="actsweep-driversim-"))
    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    t0 = time.time()
    outcome = run_search(spec, tracking_uri=uri, out=None, trainable=synthetic_trainable)
    t = outcome.timings
    marks = [(0, t["first_submit"]), *[(n, ts) for n, ts in t["completions"]]]
    total = marks[-1][0]
    print(f"{total} synthetic trials, cohorts of {args.cohort_size}, sampler {args.sampler}")
    print(
        f"start-up {t['first_submit'] - t0:.1f} s; Tune loop {t['last_finished'] - t['first_submit']:.1f} s; "
        f"MLflow backlog drained {t['tracking_drained'] - t['last_finished']:.1f} s after the last trial"
    )
    ds = t["driver_seconds"]
    print(
        f"driver totals: Optuna ask {ds['suggest']:.1f} s in Tune's loop"
        f" + {ds.get('ask_ahead', 0.0):.1f} s ahead in the searcher's helper thread,"
        f" Optuna tell + hand-off {ds['complete']:.1f} s, "
        f"MLflow writer thread {t['mlflow_writer_seconds']:.1f} s"
    )
    print(f"{'segment':>14s} {'trials':>7s} {'wall ms/trial':>14s}")
    bounds = [b for b in (1000, 5000, 10000) if b <= total] or [total]
    prev_n, prev_t = marks[0]
    for b in bounds:
        n, ts = next((n, ts) for n, ts in marks if n >= b)
        print(f"{prev_n:>6d}-{n:<7d} {n - prev_n:>7d} {1000 * (ts - prev_t) / (n - prev_n):>14.2f}")
        prev_n, prev_t = n, ts
    per = 1000 * (t["tracking_drained"] - t["first_submit"]) / total
    print(
        f"overall: {per:.2f} ms per trial (including the MLflow backlog), {1000 / per:.0f} trials/s sustained"
    )
    (root / "driver_sim.json").write_text(
        json.dumps({"args": vars(args), "timings": t}, default=str)
    )


if __name__ == "__main__":
    main()
