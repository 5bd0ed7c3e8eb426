"""The textbook stack: Ray Tune + OptunaSearch + MLflowLoggerCallback, as their docs show.

One config per Tune trial, `reuse_actors=True`, 1 CPU per trial, `tune.report` every 50
steps, Optuna's TPE through Ray's OptunaSearch, MLflow through Ray's MLflowLoggerCallback.
It trains exactly what actsweep trains (same data, same initial weights, same data order,
same convergence definitions from `models`), so the two stacks' results are comparable;
only the orchestration differs. Used by bench/throughput.py; runnable on its own:

    python bench/textbook.py bench/canonical.yaml --tracking-uri sqlite:///tb.db --timings out.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from typing import Any

T_PROCESS = time.time()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def process_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def train_fn(config: dict[str, Any]) -> None:
    """One trial: a plain nn.Sequential and torch.optim.SGD, reporting every 50 steps."""
    import torch
    import torch.nn.functional as F
    from ray import tune

    from models.convergence import Convergence, check, score, summarize
    from models.datasets import load_dataset
    from models.mlp import MLPShape, build_mlp
    from models.train import DATA_SEED_OFFSET

    torch.set_num_threads(1)
    b = config["bench"]
    conv = Convergence(**b["convergence"])
    data = load_dataset(b["dataset"], b["data_seed"], b["validation_fraction"])
    shape = MLPShape(
        in_features=data.in_features,
        out_features=data.out_features,
        width=b["width"],
        depth=int(config["depth"]),
        activation=config["activation"],
    )
    model = build_mlp(shape, config["init"], b["seed"])
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=b["momentum"])
    gen = torch.Generator().manual_seed(b["seed"] + DATA_SEED_OFFSET)
    n = data.x_train.shape[0]
    bs = b["batch_size"]
    steps: list[int] = []
    losses: list[float] = []
    window: list[float] = []
    initial = float("nan")
    status = "running"
    diverged_step = None
    train_cpu = 0.0
    perm = torch.randperm(n, generator=gen)
    pos = 0
    for step in range(1, conv.max_steps + 1):
        c0 = time.process_time()
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos : pos + bs]
        pos += bs
        loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        value = loss.item()
        train_cpu += time.process_time() - c0
        if step == 1:
            initial = value
        window.append(value)
        if not torch.isfinite(loss):
            status, diverged_step = "diverged", step
        if step % conv.eval_every == 0 or status == "diverged":
            smoothed = sum(window) / len(window)
            window = []
            steps.append(
                step if status != "diverged" else conv.eval_every * len(steps) + conv.eval_every
            )
            losses.append(smoothed)
            if status != "diverged":
                status = check(smoothed, None, initial, conv)
        done = status != "running" or step == conv.max_steps
        if step % 50 == 0 or done:
            metrics: dict[str, Any] = {"loss": losses[-1] if losses else value}
            if done:
                summary = summarize(steps, losses, None, initial, conv, diverged_step)
                metrics.update(
                    score=score(summary, conv),
                    steps_to_target=summary.steps_to_target if summary.reached else -1,
                    reached=int(summary.reached),
                    diverged=int(summary.diverged),
                    train_cpu=train_cpu,
                    worker_cpu=process_cpu(),
                    worker_pid=os.getpid(),
                    worker_rss_mb=peak_rss_mb(),
                )
            else:
                metrics["score"] = float(conv.max_steps * 2)
            tune.report(metrics)
        if done:
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("spec")
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--timings", required=True)
    parser.add_argument("--storage", default=None, help="Tune storage_path")
    args = parser.parse_args()

    import optuna
    import ray
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.search.optuna import OptunaSearch

    from search.spec import load_spec

    spec = load_spec(args.spec)
    s = spec.space
    param_space = {
        "activation": tune.choice(list(s.activations)),
        "depth": tune.randint(s.depth.low, s.depth.high + 1),
        "init": tune.choice(list(s.initializers)),
        "lr": tune.loguniform(s.lr.low, s.lr.high),
        "bench": {
            "dataset": spec.dataset.name,
            "data_seed": spec.seed,
            "validation_fraction": spec.dataset.validation_fraction,
            "width": spec.model.width,
            "momentum": s.momentum,
            "batch_size": s.batch_size,
            "seed": _member_seed(spec),
            "convergence": spec.convergence.model_dump(),
        },
    }
    ray.init(address="local", include_dashboard=False, logging_level="WARNING")
    events: dict[str, float] = {}

    class Clock(tune.Callback):
        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            events.setdefault("first_submit", time.time())

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            events["last_finished"] = time.time()

    total = spec.budget.trials_per_activation * len(s.activations)
    tuner = tune.Tuner(
        tune.with_resources(train_fn, {"cpu": 1}),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearch(
                metric="score",
                mode="min",
                sampler=optuna.samplers.TPESampler(seed=spec.seed),
            ),
            num_samples=total,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name="textbook",
            storage_path=args.storage,
            verbose=0,
            callbacks=[
                MLflowLoggerCallback(
                    tracking_uri=args.tracking_uri,
                    experiment_name="textbook",
                    save_artifact=False,
                ),
                Clock(),
            ],
        ),
    )
    ready = time.time()
    grid = tuner.fit()
    rows = []
    for r in grid:
        m = r.metrics or {}
        cfg = r.config or {}
        rows.append(
            {
                "activation": cfg.get("activation"),
                "depth": cfg.get("depth"),
                "init": cfg.get("init"),
                "lr": cfg.get("lr"),
                "reached": bool(m.get("reached", 0)),
                "steps_to_target": m.get("steps_to_target"),
                "diverged": bool(m.get("diverged", 0)),
                "train_cpu": m.get("train_cpu"),
                "worker_cpu": m.get("worker_cpu"),
                "worker_pid": m.get("worker_pid"),
                "worker_rss_mb": m.get("worker_rss_mb"),
            }
        )
    out = {
        "process_start": T_PROCESS,
        "ready": ready,
        "first_submit": events.get("first_submit"),
        "last_finished": events.get("last_finished"),
        "end": time.time(),
        "trials": rows,
    }
    with open(args.timings, "w") as f:
        json.dump(out, f)
    ray.shutdown()


def _member_seed(spec: Any) -> int:
    from search.space import member_seed

    return member_seed(spec, 0)


if __name__ == "__main__":
    main()
