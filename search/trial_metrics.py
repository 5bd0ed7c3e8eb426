"""What one trial's child run holds as metrics: the aggregate over its paired seeds, every
seed's own outcome, the loss curves and the mechanism diagnostics (pure; no MLflow calls).

Naming (one Optuna trial = one child run = ``seeds`` paired training runs):

- Aggregate (step 0): ``steps_to_target`` (the Kaplan-Meier median over seeds when
  ``reached = 1``; else the censoring time, the longest observation), ``reached`` (the KM
  median exists: at least half the seeds reached the target), ``diverged`` (more than half
  diverged), ``success_rate``, ``seeds``, ``score`` (what Optuna was told). ``initial_loss``,
  ``final_loss``, ``best_loss``, ``auc_log_loss``, ``final_accuracy``, ``val/loss``,
  ``val/accuracy`` are medians over seeds; ``steps_trained`` and ``wall_seconds`` maxima.
- Per seed i (step 0): ``seed{i}/steps_to_target`` (survival convention, as above),
  ``seed{i}/reached``, ``seed{i}/diverged``, ``seed{i}/score``, ``seed{i}/final_loss``,
  ``seed{i}/steps_trained``, ``seed{i}/diverged_step`` (diverged seeds), and its mechanism
  summaries ``seed{i}/mech/<name>``. These are what `search.stats` recomputes statistics from.
- Curves (step metrics): seed 0's ``train/loss`` and ``train/accuracy`` (so single-seed views
  and the MLflow UI work unchanged), every other seed's ``seed{i}/train/loss``; seed 0's
  diagnostics ``diag/<name>`` (``diag/mean_act/l1``, ``diag/grad_norm/l2``, ...). Other seeds'
  diagnostic curves are summarised, not stored, to keep a child run's size bounded.
- Mechanism summaries: ``mech/<name>`` is the median over seeds of ``seed{i}/mech/<name>``
  (each an early-training mean, models.diagnostics).
"""

from __future__ import annotations

import math
from typing import Any

from search.stats import median

SEED_KEYS = ("steps_to_target", "reached", "diverged", "score", "final_loss", "steps_trained")


def _finite(values: list[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def trial_metrics(
    runs: list[dict[str, Any]], aggregate: dict[str, Any], value: float | None
) -> tuple[dict[str, float], list[tuple[str, int, float]]]:
    """(summary metrics, step metrics as (key, step, value)) of one trial's child run.

    ``runs`` are the seeds' result dicts in seed-index order; ``aggregate`` is the
    `search.stats.TrialAggregate` as a dict; ``value`` is what Optuna was told.
    """
    summaries = [r["summary"] for r in runs]
    out: dict[str, float] = {
        "steps_to_target": float(aggregate["steps_to_target"]),
        "reached": float(aggregate["reached"]),
        "diverged": float(aggregate["diverged"]),
        "success_rate": float(aggregate["success_rate"]),
        "seeds": float(aggregate["seeds"]),
        "steps_trained": float(max(s["steps_trained"] for s in summaries)),
        "wall_seconds": float(max(r["wall_seconds"] for r in runs)),
    }
    limits = [r["step_limit"] for r in runs if r.get("step_limit")]
    if limits:
        # The early-stopping budget the trial ran under (max_steps when nothing stopped it).
        out["step_limit"] = float(min(limits))
    if value is not None:
        out["score"] = float(value)
    for key in ("initial_loss", "final_loss", "best_loss", "auc_log_loss", "final_accuracy"):
        values = _finite([s.get(key) for s in summaries])
        if values:
            out[key] = median(values)
    for key, name in (("val_loss", "val/loss"), ("val_accuracy", "val/accuracy")):
        values = _finite([r.get(key) for r in runs])
        if values:
            out[name] = median(values)

    mech_names = sorted({k for r in runs for k in (r.get("mechanisms") or {})})
    for name in mech_names:
        values = _finite([(r.get("mechanisms") or {}).get(name) for r in runs])
        if values:
            out[f"mech/{name}"] = median(values)

    steps: list[tuple[str, int, float]] = []
    for i, (r, s) in enumerate(zip(runs, summaries, strict=True)):
        observed = s["steps_to_target"] if s["reached"] else s["steps_trained"]
        per = {
            "steps_to_target": observed,
            "reached": float(s["reached"]),
            "diverged": float(s["diverged"]),
            "score": r.get("score"),
            "final_loss": s["final_loss"],
            "steps_trained": s["steps_trained"],
            "diverged_step": s.get("diverged_step"),
            "step_limit": r.get("step_limit"),
        }
        for k, v in per.items():
            if v is not None and math.isfinite(float(v)):
                out[f"seed{i}/{k}"] = float(v)
        for k, v in (r.get("mechanisms") or {}).items():
            if v is not None and math.isfinite(float(v)):
                out[f"seed{i}/mech/{k}"] = float(v)

        prefix = "" if i == 0 else f"seed{i}/"
        for step, loss in zip(r["steps"], r["train_loss"], strict=True):
            if math.isfinite(float(loss)):
                steps.append((f"{prefix}train/loss", int(step), float(loss)))
        if i == 0 and r.get("train_accuracy") is not None:
            for step, acc in zip(r["steps"], r["train_accuracy"], strict=True):
                if math.isfinite(float(acc)):
                    steps.append(("train/accuracy", int(step), float(acc)))
        diag = r.get("diagnostics")
        if i == 0 and diag:
            for name, values in diag["values"].items():
                for step, v in zip(diag["steps"], values, strict=True):
                    if v is not None and math.isfinite(float(v)):
                        steps.append((f"diag/{name}", int(step), float(v)))
    return out, steps
