"""Leaderboard maths: pure functions from a table of trials to a ranked table.

Input is the table `mlflow.search_runs` returns for a search's child runs, so every number
on a leaderboard comes from MLflow and can be checked with the plain MLflow client.
Ranking: activations whose best trial reached the target come first, ordered by that
trial's steps_to_target (the Kaplan-Meier median over its seeds; ties: lower final loss);
then the rest, ordered by the final loss of their best trial (a trial that did not diverge
beats one that did).

Statistics of each activation's best trial, recomputed from its per-seed metrics
(``seed{i}/steps_to_target``, ``seed{i}/reached``, ...; see `search.stats` for definitions):
``ci_low``/``ci_high`` (95 % bootstrap of the KM median over seeds), ``success_rate``,
``seeds``, ``rank_stability`` and ``p_vs_next`` (paired Wilcoxon against the next rank).
With ``seeds: 1`` the interval, stability and p-value are None (one seed has no spread).
"""

from __future__ import annotations

import io
import json
import math
import re
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from search.stats import SeedRuns, bootstrap_ci, p_vs_next, rank_stability

_SEED_METRIC = re.compile(r"^metrics\.seed(\d+)/steps_to_target$")
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
    "ci_low",
    "ci_high",
    "success_rate",
    "seeds",
    "rank_stability",
    "p_vs_next",
    "run_id",
)
STAT_COLUMNS = ("ci_low", "ci_high", "success_rate", "seeds", "rank_stability", "p_vs_next")
FORMATS = ("table", "json", "csv", "markdown")


# MLflow stores +-inf metrics as +-1.797e308 (the largest double) and NaN as NaN; a store may
# also hold numbers from older versions or other tools. None of these is a value to rank by
# or to show: they become missing (NaN here, None on the board).
_MLFLOW_INF = sys.float_info.max
_MAX_STEPS = float(2**53)  # steps beyond this are not counts (and overflow Int64)


def _numeric(values: pd.Series, low: float = -math.inf, high: float = math.inf) -> pd.Series:
    """Floats, with non-finite, MLflow-infinite and out-of-range values as NaN (missing)."""
    num = pd.to_numeric(values, errors="coerce").astype("float64")
    bad = ~np.isfinite(num) | (num.abs() >= _MLFLOW_INF) | (num < low) | (num > high)
    return num.mask(bad)


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
                "seed_runs",
            ]
        )
    steps = _numeric(_col(runs, "metrics.steps_to_target"), 0.0, _MAX_STEPS)
    out = pd.DataFrame(
        {
            "run_id": runs["run_id"].astype(str),
            "status": runs["status"].astype(str),
            "activation": _col(runs, "params.activation").astype(str),
            "depth": _numeric(_col(runs, "params.depth"), 0.0, float(2**31)),
            "init": _col(runs, "params.init"),
            "lr": _numeric(_col(runs, "params.lr"), 0.0),
            "optimizer": _col(runs, "params.optimizer"),
            # A run that claims the target without a usable step count cannot be ranked on it.
            "reached": (_numeric(_col(runs, "metrics.reached")).fillna(0) > 0) & steps.notna(),
            "diverged": _numeric(_col(runs, "metrics.diverged")).fillna(0) > 0,
            "steps_to_target": steps,
            "final_loss": _numeric(_col(runs, "metrics.final_loss")),
        }
    )
    out["seed_runs"] = _seed_runs(runs)
    return out.reset_index(drop=True)


def _num(runs: pd.DataFrame, name: str) -> list[float]:
    high = _MAX_STEPS if name.endswith(("steps_to_target", "max_steps")) else math.inf
    return [float(v) for v in _numeric(_col(runs, name), -math.inf, high)]


def _seed_runs(runs: pd.DataFrame) -> list[SeedRuns | None]:
    """Each trial's per-seed outcomes from its ``seed{i}/...`` metrics (None: not finished).

    Runs logged before seeds existed (no per-seed metrics) count as one seed: their own
    steps_to_target, reached, diverged and score.
    """
    n_seeds = 1 + max(
        (int(m.group(1)) for c in runs.columns if (m := _SEED_METRIC.match(str(c)))), default=-1
    )
    max_steps = _num(runs, "params.max_steps")
    observed = _num(runs, "metrics.steps_to_target")
    columns = {
        key: [_num(runs, f"metrics.seed{i}/{key}") for i in range(n_seeds)]
        for key in ("steps_to_target", "reached", "diverged", "score")
    }
    own = {key: _num(runs, f"metrics.{key}") for key in ("reached", "diverged", "score")}
    out: list[SeedRuns | None] = []
    for r in range(len(runs)):
        seeds = [i for i in range(n_seeds) if math.isfinite(columns["steps_to_target"][i][r])]
        if seeds:
            steps = [columns["steps_to_target"][i][r] for i in seeds]
            reached = [columns["reached"][i][r] > 0 for i in seeds]
            diverged = [columns["diverged"][i][r] > 0 for i in seeds]
            scores = [columns["score"][i][r] for i in seeds]
        elif math.isfinite(observed[r]):
            steps, reached = [observed[r]], [own["reached"][r] > 0]
            diverged, scores = [own["diverged"][r] > 0], [own["score"][r]]
        else:
            out.append(None)
            continue
        budget = max_steps[r] if math.isfinite(max_steps[r]) else max(steps)
        out.append(
            SeedRuns(tuple(steps), tuple(reached), tuple(diverged), tuple(scores), int(budget))
        )
    return out


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
            "ci_low": None,
            "ci_high": None,
            "success_rate": None,
            "seeds": None,
            "rank_stability": None,
            "p_vs_next": None,
            "run_id": None,
            "_seed_runs": None,
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
                _seed_runs=best["seed_runs"] if "seed_runs" in best.index else None,
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
    _add_statistics(rows)
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
            "ci_low": "Float64",
            "ci_high": "Float64",
            "success_rate": "Float64",
            "seeds": "Int64",
            "rank_stability": "Float64",
            "p_vs_next": "Float64",
        }
    )


def _add_statistics(rows: list[dict[str, Any]]) -> None:
    """Fill the statistics columns of ranked rows in place (pure maths in search.stats)."""
    ranked = [r for r in rows if isinstance(r.get("_seed_runs"), SeedRuns)]
    for r in ranked:
        runs: SeedRuns = r["_seed_runs"]
        r["ci_low"], r["ci_high"] = bootstrap_ci(runs)
        r["success_rate"] = sum(runs.reached) / runs.n
        r["seeds"] = runs.n
    for r, stability in zip(ranked, rank_stability([r["_seed_runs"] for r in ranked]), strict=True):
        r["rank_stability"] = stability
    for i, r in enumerate(ranked):
        nxt = ranked[i + 1]["_seed_runs"] if i + 1 < len(ranked) else None
        r["p_vs_next"] = p_vs_next(r["_seed_runs"], nxt)


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
    if col in ("diverged_fraction", "success_rate"):
        return f"{100 * v:.0f}%"
    if col in ("ci_low", "ci_high"):
        return f"{v:.0f}"
    if col == "rank_stability":
        return f"{v:.2f}"
    if col == "p_vs_next":
        return f"{v:.3g}"
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
