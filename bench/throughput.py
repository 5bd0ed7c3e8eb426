"""Throughput, side by side in one run: the textbook stack vs `actsweep run` on one spec.

    python bench/throughput.py [bench/canonical.yaml] [--out DIR] [--skip-textbook]

Both run as fresh processes on this machine, one after the other, with their own MLflow
SQLite store and a fresh HOME, sharing one dataset cache that is filled before either starts
(mnist1d is generated once per machine; neither stack pays it). Definitions (the same for
both, taken from the same Ray Tune callback events):
- start-up: process start -> first trial started (Tune's `on_trial_start`: imports, Ray,
  tracking and data ready, and the first trial's actor up);
- search: first trial started -> last trial finished; trials/min is over this phase;
- wall: the whole process;
- worker CPU in training: CPU seconds inside the training loop / all CPU seconds of the
  worker processes that ran trials (imports, Ray plumbing and reporting included);
- peak memory per worker: the largest max-RSS among those worker processes;
- training bound: the trials/min a stack would reach with no orchestration at all (its
  training CPU seconds spread over its workers): the ceiling its training arithmetic sets;
- driver CPU in search (actsweep): CPU seconds of the driver process (Tune's loop, Optuna, the
  MLflow writer) between the first trial start and the last finish, which the workers on the
  same machine did not get;
- import floor: the CPU seconds a fresh Python process spends importing what every Tune
  worker that trains with PyTorch loads before its first step (ray.tune, whose trainable
  classes a trial's actor unpickles, torch and the training code; best of three). It is a
  lower bound on each worker's orchestration CPU, so the training share ceiling
  train / (train + workers x floor) bounds the worker CPU share a stack with that much
  training CPU can reach, however thin its orchestration;
- Tune floor: the same bound measured where it is paid, per worker of a do-nothing Tune
  search on a fresh local Ray (`bench/worker_floor.py`: Ray's worker start-up, Tune's
  trainable, then torch and the training code imported, nothing trained); the ceiling uses
  the larger of the two floors.
Timing belongs here, never in tests: these machines are shared, so read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, timings: Path) -> tuple[float, float, Any]:
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        HOME=str(cwd / "home"),
        XDG_CACHE_HOME=str(cwd.parent / "cache"),
    )
    (cwd / "home").mkdir(exist_ok=True)
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    t1 = time.time()
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-5000:])
        raise SystemExit(f"{cmd[:3]} failed with exit code {proc.returncode}")
    return t0, t1, json.loads(timings.read_text())


def warm_dataset_cache(spec: Path, cache: Path) -> None:
    """Fill the shared dataset cache once, outside both measurements."""
    cache.mkdir(parents=True, exist_ok=True)
    code = (
        "import sys; from search.spec import load_spec; from models.datasets import load_dataset; "
        "s = load_spec(sys.argv[1]); "
        "load_dataset(s.dataset.name, s.seed, s.dataset.validation_fraction)"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO), XDG_CACHE_HOME=str(cache))
    subprocess.run([sys.executable, "-c", code, str(spec)], env=env, check=True)


def textbook(spec: Path, work: Path) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    out = work / "timings.json"
    cmd = [
        sys.executable,
        str(REPO / "bench" / "textbook.py"),
        str(spec),
        "--tracking-uri",
        f"sqlite:///{work / 'mlflow.db'}",
        "--timings",
        str(out),
        "--storage",
        str(work / "tune"),
    ]
    t0, t1, t = _run(cmd, work, out)
    workers: dict[Any, dict[str, float]] = {}
    best: dict[str, int] = {}
    for r in t["trials"]:
        w = workers.setdefault(r["worker_pid"], {"train_cpu": 0.0, "worker_cpu": 0.0, "rss": 0.0})
        w["train_cpu"] += r["train_cpu"] or 0.0
        w["worker_cpu"] = max(w["worker_cpu"], r["worker_cpu"] or 0.0)
        w["rss"] = max(w["rss"], r["worker_rss_mb"] or 0.0)
        if r["reached"]:
            best[r["activation"]] = min(best.get(r["activation"], 10**9), int(r["steps_to_target"]))
    return _figures(
        "textbook", t0, t1, t["first_submit"], t["last_finished"], len(t["trials"]), workers, best
    )


def actsweep(spec: Path, work: Path) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    out = work / "timings.json"
    uri = f"sqlite:///{work / 'mlflow.db'}"
    cmd = [
        sys.executable,
        "-m",
        "search.cli",
        "run",
        str(spec),
        "--tracking-uri",
        uri,
        "--quiet",
        "--timings-json",
        str(out),
    ]
    t0, t1, t = _run(cmd, work, out)
    workers = {
        k: {"train_cpu": v["train_cpu"], "worker_cpu": v["worker_cpu"], "rss": v["worker_rss_mb"]}
        for k, v in t["workers"].items()
    }
    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(
        search_all_experiments=True, filter_string="tags.`actsweep.role` = 'trial'"
    )
    best: dict[str, int] = {}
    for _, r in runs[runs["metrics.reached"] == 1.0].iterrows():
        act = r["params.activation"]
        best[act] = min(best.get(act, 10**9), int(r["metrics.steps_to_target"]))
    first = t["marks"]["first_trial_start"]
    row = _figures("actsweep", t0, t1, first, t["last_finished"], len(runs), workers, best)
    cpu = t.get("driver_cpu", {})
    if "first_trial_start" in cpu and "last_finished" in cpu:
        # The driver shares the machine with the workers: its CPU in the search phase is
        # CPU the workers did not get (Tune's loop, Optuna, the MLflow writer).
        row["driver_cpu_in_search_s"] = cpu["last_finished"] - cpu["first_trial_start"]
    row["cpu_before_first_cohort_s"] = sum(
        v.get("cpu_before_first_cohort", 0.0) for v in t["workers"].values()
    )
    return row


IMPORT_FLOOR = (
    "import resource, ray.tune, torch, models.train; "
    "u = resource.getrusage(resource.RUSAGE_SELF); print(u.ru_utime + u.ru_stime)"
)


def import_floor(repeats: int = 3) -> float:
    """CPU seconds of a fresh process importing what a training Tune worker must (best of n)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    runs = [
        float(
            subprocess.run(
                [sys.executable, "-c", IMPORT_FLOOR],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()[-1]
        )
        for _ in range(repeats)
    ]
    return min(runs)


def tune_floor(work: Path, workers: int) -> float:
    """Mean CPU seconds per worker of a do-nothing Tune search (`bench/worker_floor.py`)."""
    work.mkdir(parents=True, exist_ok=True)
    out = work / "floor.json"
    cmd = [sys.executable, str(REPO / "bench" / "worker_floor.py"), "--workers", str(workers)]
    _, _, rows = _run([*cmd, "--json", str(out)], work, out)
    return sum(r["cpu_after_imports"] for r in rows) / len(rows)


def with_floor(row: dict[str, Any], floor: float, tune: float) -> dict[str, Any]:
    train, workers = row["train_cpu_s"], row["workers"]
    row["import_floor_s"] = floor
    row["tune_floor_s"] = tune
    # The larger of the two: no worker of this stack can spend less before its first step.
    low = max(floor, tune)
    row["train_share_ceiling"] = train / (train + workers * low) if train > 0 else 0.0
    return row


def _figures(
    name: str,
    t0: float,
    t1: float,
    first: float,
    last: float,
    trials: int,
    workers: dict[Any, dict[str, float]],
    best: dict[str, int],
) -> dict[str, Any]:
    search = last - first
    train = sum(w["train_cpu"] for w in workers.values())
    total = sum(w["worker_cpu"] for w in workers.values())
    return {
        "stack": name,
        "trials": trials,
        "startup_s": first - t0,
        "search_s": search,
        "trials_per_min": 60.0 * trials / search if search > 0 else float("inf"),
        "wall_s": t1 - t0,
        "peak_worker_rss_mb": max((w["rss"] for w in workers.values()), default=0.0),
        "workers": len(workers),
        "train_cpu_s": train,
        "worker_cpu_s": total,
        "train_cpu_share": train / total if total else 0.0,
        # The ceiling with zero orchestration: every worker training from the first trial
        # start to the last finish (training CPU spread over the workers, no start-up, no
        # driver, no idle tail). Above it, only cheaper training raises trials/min.
        "training_bound_trials_per_min": (
            60.0 * trials * len(workers) / train if train > 0 else float("inf")
        ),
        "best_steps": dict(sorted(best.items())),
    }


def report(rows: list[dict[str, Any]]) -> str:
    keys = [
        "trials",
        "startup_s",
        "search_s",
        "trials_per_min",
        "wall_s",
        "peak_worker_rss_mb",
        "workers",
        "train_cpu_s",
        "worker_cpu_s",
        "train_cpu_share",
        "import_floor_s",
        "tune_floor_s",
        "train_share_ceiling",
        "training_bound_trials_per_min",
        "cpu_before_first_cohort_s",
        "driver_cpu_in_search_s",
    ]
    lines = [f"{'':22s}" + "".join(f"{r['stack']:>14s}" for r in rows)]
    for k in keys:
        cells = "".join(
            f"{r[k]:>14.3f}" if isinstance(r.get(k), float) else f"{r.get(k, '-')!s:>14}"
            for r in rows
        )
        lines.append(f"{k:22s}{cells}")
    acts = sorted({a for r in rows for a in r["best_steps"]})
    for a in acts:
        lines.append(
            f"{'best steps ' + a:22s}"
            + "".join(f"{str(r['best_steps'].get(a, '-')):>14s}" for r in rows)
        )
    if len(rows) == 2:
        tb, us = rows
        lines.append("")
        lines.append(
            f"ratio trials/min (actsweep/textbook): {us['trials_per_min'] / tb['trials_per_min']:.1f}x"
        )
        lines.append(
            f"ratio start-up    (actsweep/textbook): {us['startup_s'] / tb['startup_s']:.2f}"
        )
        lines.append(f"ratio wall        (textbook/actsweep): {tb['wall_s'] / us['wall_s']:.1f}x")
        for a in acts:
            t, u = tb["best_steps"].get(a), us["best_steps"].get(a)
            if t is None or u is None:
                verdict = (
                    "textbook never reached"
                    if t is None and u is not None
                    else "actsweep never reached"
                )
            else:
                verdict = f"{(u - t) / t:+.0%} vs textbook ({'ok' if u <= 1.10 * t else 'WORSE than +10%'})"
            lines.append(f"best steps {a:10s} {verdict}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("spec", nargs="?", default=str(REPO / "bench" / "canonical.yaml"))
    parser.add_argument("--out", default=None, help="keep the stores and a results.json here")
    parser.add_argument("--skip-textbook", action="store_true")
    args = parser.parse_args()
    spec = Path(args.spec).resolve()
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="actsweep-bench-"))
    warm_dataset_cache(spec, root / "cache")
    rows = []
    if not args.skip_textbook:
        rows.append(textbook(spec, root / "textbook"))
    rows.append(actsweep(spec, root / "actsweep"))
    floor = import_floor()
    tune = tune_floor(root / "floor", max(r["workers"] for r in rows))
    rows = [with_floor(row, floor, tune) for row in rows]
    text = report(rows)
    print(text)
    (root / "results.json").write_text(json.dumps(rows, indent=2))
    print(f"\n(stores and results.json in {root})")


if __name__ == "__main__":
    main()
