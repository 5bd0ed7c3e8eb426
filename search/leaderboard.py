"""Leaderboard maths: pure functions from a table of trials to a ranked table.

Input is the table `mlflow.search_runs` returns for a search's child runs, so every number
on a leaderboard comes from MLflow and can be checked with the plain MLflow client.
Ranking: activations whose best trial reached the target come first, ordered by that
trial's steps_to_target (ties: lower final loss); then the rest, ordered by the final
loss of their best trial (a trial that did not diverge beats one that did).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

COLUMNS = (
    "rank",
    "activation",
    "reached",
    "steps_to_target",
    "depth",
    "init",
    "lr",
    "optimizer",
    "final_loss",
    "trials",
    "finished",
    "diverged_fraction",
    "run_id",
)
FORMATS = ("table", "json", "csv", "markdown")


def _col(df: pd.DataFrame, name: str, default: Any = None) -> pd.Series:
    if name in df.columns:
        return df[name]
    return pd.Series([default] * len(df), index=df.index, dtype=object)


def trials_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Normalise `mlflow.search_runs` output to one row per trial with typed columns."""
    if runs.empty:
        return pd.DataFrame(
            columns=[
                "run_id",
                "status",
                "activation",
                "depth",
                "init",
                "lr",
                "optimizer",
                "reached",
                "diverged",
                "steps_to_target",
                "final_loss",
            ]
        )
    out = pd.DataFrame(
        {
            "run_id": runs["run_id"].astype(str),
            "status": runs["status"].astype(str),
            "activation": _col(runs, "params.activation").astype(str),
            "depth": pd.to_numeric(_col(runs, "params.depth"), errors="coerce"),
            "init": _col(runs, "params.init"),
            "lr": pd.to_numeric(_col(runs, "params.lr"), errors="coerce"),
            "optimizer": _col(runs, "params.optimizer"),
            "reached": pd.to_numeric(_col(runs, "metrics.reached"), errors="coerce").fillna(0) > 0,
            "diverged": pd.to_numeric(_col(runs, "metrics.diverged"), errors="coerce").fillna(0)
            > 0,
            "steps_to_target": pd.to_numeric(
                _col(runs, "metrics.steps_to_target"), errors="coerce"
            ),
            "final_loss": pd.to_numeric(_col(runs, "metrics.final_loss"), errors="coerce"),
        }
    )
    return out.reset_index(drop=True)


def _best_trial(group: pd.DataFrame) -> pd.Series | None:
    done = group[group["status"] == "FINISHED"]
    if done.empty:
        return None
    reached = done[done["reached"]]
    if not reached.empty:
        ordered = reached.sort_values(
            ["steps_to_target", "final_loss", "run_id"], na_position="last"
        )
    else:
        ordered = done.sort_values(["diverged", "final_loss", "run_id"], na_position="last")
    return ordered.iloc[0]


def compute_leaderboard(
    trials: pd.DataFrame, activations: Sequence[str] | None = None
) -> pd.DataFrame:
    """Rank activations by their best trial (see module docstring); one row per activation.

    `activations` lists the strata the search had, so an activation whose every trial
    failed still gets a row (unranked data is data too).
    """
    names = list(activations) if activations is not None else sorted(set(trials["activation"]))
    for extra in sorted(set(trials["activation"]) - set(names)):
        names.append(extra)
    rows = []
    for act in names:
        group = trials[trials["activation"] == act]
        best = _best_trial(group)
        n = len(group)
        finished = int((group["status"] == "FINISHED").sum())
        diverged = int(group["diverged"].sum()) if n else 0
        row: dict[str, Any] = {
            "activation": act,
            "reached": bool(best is not None and best["reached"]),
            "steps_to_target": None,
            "depth": None,
            "init": None,
            "lr": None,
            "optimizer": None,
            "final_loss": None,
            "trials": n,
            "finished": finished,
            "diverged_fraction": (diverged / n) if n else 0.0,
            "run_id": None,
        }
        if best is not None:
            row.update(
                steps_to_target=int(best["steps_to_target"]) if best["reached"] else None,
                depth=None if pd.isna(best["depth"]) else int(best["depth"]),
                init=best["init"],
                lr=None if pd.isna(best["lr"]) else float(best["lr"]),
                optimizer=best["optimizer"],
                final_loss=None if pd.isna(best["final_loss"]) else float(best["final_loss"]),
                run_id=best["run_id"],
            )
        rows.append(row)

    position = {name: i for i, name in enumerate(names)}

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        # Final tie-break: the order the spec lists activations in (deterministic).
        loss = r["final_loss"] if r["final_loss"] is not None else math.inf
        if r["reached"]:
            return (0, r["steps_to_target"], loss, position[r["activation"]])
        has_best = r["run_id"] is not None
        return (1 if has_best else 2, 0, loss, position[r["activation"]])

    rows.sort(key=key)
    for i, r in enumerate(rows, start=1):
        r["rank"] = i
    board = pd.DataFrame(rows, columns=list(COLUMNS))
    # Nullable dtypes: a censored activation has <NA> steps, not a float NaN.
    return board.astype(
        {
            "rank": "int64",
            "reached": "bool",
            "steps_to_target": "Int64",
            "depth": "Int64",
            "lr": "Float64",
            "final_loss": "Float64",
            "trials": "int64",
            "finished": "int64",
            "diverged_fraction": "float64",
        }
    )


def to_records(board: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-safe rows: None for missing values, never NaN or infinity."""
    records = []
    for row in board.to_dict(orient="records"):
        clean: dict[str, Any] = {}
        for k, v in row.items():
            if v is None or v is pd.NA or (isinstance(v, float) and not math.isfinite(v)):
                clean[k] = None
            elif hasattr(v, "item"):
                clean[k] = v.item()  # numpy scalar -> Python
            else:
                clean[k] = v
        records.append(clean)
    return records


def _fmt(v: Any, col: str) -> str:
    if v is None:
        return "-"
    if col == "lr":
        return f"{v:.4g}"
    if col == "final_loss":
        return f"{v:.4f}"
    if col == "diverged_fraction":
        return f"{100 * v:.0f}%"
    if col == "reached":
        return "yes" if v else "no"
    if col == "run_id":
        return str(v)[:12]
    return str(v)


def render(board: pd.DataFrame, fmt: str) -> str:
    """The leaderboard as table | json | csv | markdown text."""
    records = to_records(board)
    if fmt == "json":
        return json.dumps(records, indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        pd.DataFrame(records, columns=list(COLUMNS)).to_csv(buf, index=False)
        return buf.getvalue()
    cols = list(COLUMNS)
    cells = [[_fmt(r[c], c) for c in cols] for r in records]
    if fmt == "markdown":
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(lines) + "\n"
    if fmt == "table":
        widths = [
            max(len(c), *(len(row[i]) for row in cells)) if cells else len(c)
            for i, c in enumerate(cols)
        ]
        line = "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))
        body = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
        return "\n".join([line, "-" * len(line), *body]) + "\n"
    raise ValueError(f"unknown format {fmt!r}")


def leaderboard_files(board: pd.DataFrame) -> dict[str, str]:
    """The artifacts written to the parent run."""
    return {
        "leaderboard.json": render(board, "json"),
        "leaderboard.csv": render(board, "csv"),
        "leaderboard.md": render(board, "markdown"),
    }
