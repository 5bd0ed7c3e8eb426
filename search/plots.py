"""The plots on a search's parent run, so the MLflow UI shows the answer without code.

Two PNGs beside the leaderboard files: each activation's best loss curve, and the best
steps-to-target per activation and depth as a heatmap. The tables are pure functions of the
trials table (`search.leaderboard.trials_table`); drawing uses matplotlib's object API with
the Agg canvas, so no global backend is touched in the driver.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient

LOSS_CURVES = "best_loss_curves.png"
HEATMAP = "steps_to_target_by_depth.png"

Curve = tuple[Sequence[int], Sequence[float]]


def best_steps_by_depth(
    trials: pd.DataFrame, activations: Sequence[str] | None = None
) -> pd.DataFrame:
    """Fewest steps to target per (activation, depth) over finished trials that reached it.

    Rows follow `activations` (then any others), columns are the depths tried; a cell is
    NaN where no trial of that activation and depth reached the target.
    """
    names = list(activations) if activations is not None else []
    names += sorted(set(trials["activation"]) - set(names)) if not trials.empty else []
    depths = sorted(int(d) for d in trials["depth"].dropna().unique()) if not trials.empty else []
    table = pd.DataFrame(np.nan, index=pd.Index(names, name="activation"), columns=depths)
    if trials.empty:
        return table
    done = trials[(trials["status"] == "FINISHED") & trials["reached"] & trials["depth"].notna()]
    best = done.groupby(["activation", "depth"])["steps_to_target"].min()
    for (act, depth), steps in best.items():
        table.loc[act, int(depth)] = float(steps)
    return table


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)
    return buf.getvalue()


def tried_by_depth(trials: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Finished trials per cell of `table` (tells "never reached" from "never tried")."""
    counts = pd.DataFrame(0, index=table.index, columns=table.columns)
    if trials.empty:
        return counts
    done = trials[(trials["status"] == "FINISHED") & trials["depth"].notna()]
    for (act, depth), n in done.groupby(["activation", "depth"]).size().items():
        if act in counts.index and int(depth) in counts.columns:
            counts.loc[act, int(depth)] = int(n)
    return counts


def heatmap_png(table: pd.DataFrame, tried: pd.DataFrame | None, title: str) -> bytes:
    """The best-steps table as an annotated heatmap.

    A cell shows the fewest steps; "no" where trials ran but none reached the target;
    blank where no trial had that depth.
    """
    rows, cols = max(1, len(table.index)), max(1, len(table.columns))
    fig = Figure(
        figsize=(max(5.5, 2.5 + 0.8 * cols), 1.6 + 0.45 * rows), dpi=110, layout="constrained"
    )
    ax = fig.add_subplot()
    values = table.to_numpy(dtype=float) if table.size else np.full((rows, cols), np.nan)
    counts = tried.to_numpy() if tried is not None and tried.size else None
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(len(table.columns)), [str(c) for c in table.columns])
    ax.set_yticks(range(len(table.index)), [str(i) for i in table.index])
    ax.set_xlabel("depth (hidden layers)")
    ax.set_title(title, fontsize=9)
    finite = values[np.isfinite(values)]
    mid = float(np.median(finite)) if finite.size else 0.0
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            if not math.isnan(v):
                text, color = f"{v:.0f}", "black" if v > mid else "white"
            elif counts is not None and counts[i, j] > 0:
                text, color = "no", "dimgrey"
            else:
                continue
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color=color)
    if finite.size:
        fig.colorbar(image, ax=ax, label="steps to target")
    return _png(fig)


def loss_curves_png(curves: Mapping[str, Curve], target_loss: float | None, title: str) -> bytes:
    """One line per activation (its best trial's training loss), log scale, target dashed."""
    fig = Figure(figsize=(7.0, 4.2), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    for name, (steps, losses) in curves.items():
        pts = [(s, v) for s, v in zip(steps, losses, strict=True) if math.isfinite(v) and v > 0]
        if pts:
            marker = "o" if len(pts) <= 30 else None  # short curves: show the evaluations
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                label=name,
                linewidth=1.4,
                marker=marker,
                markersize=3,
            )
    if target_loss is not None:
        ax.axhline(target_loss, color="black", linestyle="--", linewidth=1, label="target")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("train/loss (smoothed)")
    ax.set_title(title, fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return _png(fig)


def best_curves(client: MlflowClient, board: pd.DataFrame) -> dict[str, Curve]:
    """The `train/loss` history of each activation's best run, in leaderboard order."""
    curves: dict[str, Curve] = {}
    for _, row in board.iterrows():
        run_id = row["run_id"]
        if run_id is None or (isinstance(run_id, float) and math.isnan(run_id)):
            continue
        history = sorted(client.get_metric_history(str(run_id), "train/loss"), key=lambda m: m.step)
        curves[str(row["activation"])] = (
            [m.step for m in history],
            [float(m.value) for m in history],
        )
    return curves


def plot_files(
    client: MlflowClient,
    board: pd.DataFrame,
    trials: pd.DataFrame,
    *,
    search_id: str,
    activations: Sequence[str],
    target_loss: float | None,
) -> dict[str, bytes]:
    """The PNG artifacts of a finished search, by file name."""
    table = best_steps_by_depth(trials, activations)
    return {
        LOSS_CURVES: loss_curves_png(
            best_curves(client, board),
            target_loss,
            f"{search_id}\nbest trial of each activation",
        ),
        HEATMAP: heatmap_png(
            table,
            tried_by_depth(trials, table),
            f"{search_id}\nfewest steps to target by depth (no: tried, never reached)",
        ),
    }
