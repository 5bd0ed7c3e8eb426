"""Where each activation converges fastest: the convergence map of a search.

Data (pure, from the child runs' table): the best steps-to-target per (activation, depth) and
per (activation, init); each activation's learning-rate curve (every trial's steps-to-target
against its lr, and the best per geometric lr bin); and, from `search.probe`, each
activation's largest stable learning rate. Pictures: two heatmaps and the lr curves.

"Best" means among trials whose aggregate reached the target (the KM median over seeds
exists); a cell without such a trial is None (drawn blank). Written to the parent run as
``convergence_map.json`` and ``convergence_map/*.png`` at the end of every search.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from models.initializers import resolve_init

LR_BINS = 8


def _col(runs: pd.DataFrame, name: str) -> pd.Series:
    if name in runs.columns:
        return runs[name]
    return pd.Series([None] * len(runs), index=runs.index, dtype=object)


def map_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per finished trial: activation, depth, init (resolved), lr, reached, steps."""
    columns = ["run_id", "activation", "depth", "init", "lr", "reached", "steps_to_target"]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    done = runs[runs["status"] == "FINISHED"] if "status" in runs.columns else runs
    inits: list[str | None] = []
    for init, resolved, act in zip(
        _col(done, "params.init"),
        _col(done, "params.init_resolved"),
        _col(done, "params.activation"),
        strict=True,
    ):
        if isinstance(resolved, str) and resolved:
            inits.append(resolved)
        elif isinstance(init, str) and init:
            inits.append(resolve_init(init, str(act)))
        else:
            inits.append(None)
    out = pd.DataFrame(
        {
            "run_id": done["run_id"].astype(str),
            "activation": _col(done, "params.activation").astype(str),
            "depth": pd.to_numeric(_col(done, "params.depth"), errors="coerce"),
            "init": inits,
            "lr": pd.to_numeric(_col(done, "params.lr"), errors="coerce"),
            "reached": pd.to_numeric(_col(done, "metrics.reached"), errors="coerce").fillna(0) > 0,
            "steps_to_target": pd.to_numeric(
                _col(done, "metrics.steps_to_target"), errors="coerce"
            ),
        }
    )
    return out.reset_index(drop=True)


def _best(group: pd.DataFrame) -> tuple[float | None, str | None]:
    reached = group[group["reached"]]
    if reached.empty:
        return None, None
    row = reached.sort_values(["steps_to_target", "run_id"]).iloc[0]
    return float(row["steps_to_target"]), str(row["run_id"])


def _grid(table: pd.DataFrame, activations: Sequence[str], key: str) -> dict[str, Any]:
    values = sorted({v for v in table[key].dropna()}, key=lambda v: (str(type(v)), v))
    if key == "depth":
        values = [int(v) for v in values]
    best: list[list[float | None]] = []
    run_ids: list[list[str | None]] = []
    for act in activations:
        row_best, row_ids = [], []
        for v in values:
            cell = table[(table["activation"] == act) & (table[key] == v)]
            b, rid = _best(cell)
            row_best.append(b)
            row_ids.append(rid)
        best.append(row_best)
        run_ids.append(row_ids)
    return {
        "activations": list(activations),
        key + "s": values,
        "best_steps": best,
        "run_ids": run_ids,
    }


def lr_curve(table: pd.DataFrame, activation: str, bins: int = LR_BINS) -> dict[str, Any]:
    """Every trial of ``activation`` as (lr, steps, reached) and the best reached per log bin."""
    group = table[table["activation"] == activation].sort_values(["lr", "run_id"])
    points = [
        {
            "lr": float(r.lr),
            "steps_to_target": float(r.steps_to_target)
            if math.isfinite(r.steps_to_target)
            else None,
            "reached": bool(r.reached),
            "run_id": str(r.run_id),
        }
        for r in group.itertuples()
        if math.isfinite(r.lr)
    ]
    lrs = [float(p["lr"]) for p in points]  # type: ignore[arg-type]
    out_bins = []
    if lrs:
        lo, hi = math.log10(min(lrs)), math.log10(max(lrs))
        edges = np.linspace(lo, hi if hi > lo else lo + 1e-9, bins + 1)
        for b in range(bins):
            left, right = float(edges[b]), float(edges[b + 1])
            last = b == bins - 1
            inside = [
                (p, x)
                for p, x in zip(points, map(math.log10, lrs), strict=True)
                if left <= x < right or (last and x >= right)
            ]
            reached = [float(p["steps_to_target"]) for p, _ in inside if p["reached"]]  # type: ignore[arg-type]
            out_bins.append(
                {
                    "lr_low": 10**left,
                    "lr_high": 10**right,
                    "trials": len(inside),
                    "best_steps": min(reached) if reached else None,
                }
            )
    return {"points": points, "bins": out_bins}


def convergence_map(
    runs: pd.DataFrame,
    activations: Sequence[str],
    probes: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The map as plain JSON-ready data (see the module docstring)."""
    table = map_table(runs)
    return {
        "by_depth": _grid(table, activations, "depth"),
        "by_init": _grid(table, activations, "init"),
        "lr_curves": {act: lr_curve(table, act) for act in activations},
        "lr_probe": dict(probes or {}),
    }


# --- pictures ----------------------------------------------------------------------------


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def heatmap_png(grid: dict[str, Any], key: str, title: str) -> bytes:
    """A heatmap of best steps-to-target (blank: never reached), the number in each cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acts, cols = grid["activations"], grid[key + "s"]
    data = np.array(
        [[np.nan if v is None else v for v in row] for row in grid["best_steps"]], dtype=float
    ).reshape(len(acts), len(cols))
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * max(len(cols), 1), 0.6 + 0.45 * len(acts)))
    ax.imshow(np.ma.masked_invalid(data), cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(len(cols)), [str(c) for c in cols], rotation=30 if key == "init" else 0)
    ax.set_yticks(range(len(acts)), acts)
    ax.set_xlabel(key)
    ax.set_title(title)
    for i in range(len(acts)):
        for j in range(len(cols)):
            if np.isfinite(data[i, j]):
                ax.text(j, i, f"{data[i, j]:.0f}", ha="center", va="center", color="w", fontsize=8)
    return _png(fig)


def lr_curves_png(cmap: dict[str, Any], max_steps: float) -> bytes:
    """Steps-to-target against lr per activation (misses drawn at max_steps as crosses),
    with each largest stable lr as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = cmap["lr_curves"]
    fig, ax = plt.subplots(figsize=(7, 4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (act, curve) in enumerate(curves.items()):
        colour = colours[k % len(colours)]
        hit = [(p["lr"], p["steps_to_target"]) for p in curve["points"] if p["reached"]]
        miss = [p["lr"] for p in curve["points"] if not p["reached"]]
        if hit:
            xs, ys = zip(*hit, strict=True)
            ax.plot(xs, ys, "o", color=colour, label=act, ms=4)
        if miss:
            # Labelled here when the activation never reached: it still gets a legend entry.
            label = None if hit else act
            ax.plot(miss, [max_steps] * len(miss), "x", color=colour, ms=4, label=label)
        bins = [(b["lr_low"], b["lr_high"], b["best_steps"]) for b in curve["bins"]]
        line = [(math.sqrt(lo * hi), s) for lo, hi, s in bins if s is not None]
        if line:
            xs, ys = zip(*line, strict=True)
            ax.plot(xs, ys, "-", color=colour, lw=1)
        probe = cmap["lr_probe"].get(act)
        if probe and probe.get("largest_stable_lr"):
            ax.axvline(probe["largest_stable_lr"], color=colour, ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("steps to target (x: missed)")
    ax.set_title("Learning-rate curves (dashed: largest stable lr)")
    if ax.get_legend_handles_labels()[0]:  # every trial may have missed: nothing labelled
        ax.legend(fontsize=7, ncol=2)
    return _png(fig)


def pictures(cmap: dict[str, Any], max_steps: float) -> dict[str, bytes]:
    return {
        "heatmap_depth.png": heatmap_png(cmap["by_depth"], "depth", "best steps to target"),
        "heatmap_init.png": heatmap_png(cmap["by_init"], "init", "best steps to target"),
        "lr_curves.png": lr_curves_png(cmap, max_steps),
    }
