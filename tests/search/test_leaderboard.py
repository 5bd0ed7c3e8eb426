"""Leaderboard ordering and formats on hand-made tables of trials."""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from search.leaderboard import COLUMNS, compute_leaderboard, render, to_records, trials_table


def _run(
    run_id: str,
    act: str,
    *,
    steps: float,
    reached: bool,
    diverged: bool = False,
    loss: float = 0.3,
    status: str = "FINISHED",
    depth: int = 2,
    lr: float = 0.1,
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "status": status,
        "params.activation": act,
        "params.depth": str(depth),
        "params.init": "auto",
        "params.lr": repr(lr),
        "params.optimizer": "momentum",
        "metrics.steps_to_target": steps,
        "metrics.reached": float(reached),
        "metrics.diverged": float(diverged),
        "metrics.final_loss": loss,
    }


def _board(rows: list[dict[str, Any]], acts: list[str] | None = None) -> pd.DataFrame:
    return compute_leaderboard(trials_table(pd.DataFrame(rows)), acts)


def test_reached_ranks_by_steps_then_censored_by_loss() -> None:
    rows = [
        _run("a1", "elu", steps=300, reached=True, depth=3, lr=0.2),
        _run("a2", "elu", steps=150, reached=True, depth=4, lr=0.3),
        _run("b1", "relu", steps=200, reached=True),
        _run("c1", "tanh", steps=1000, reached=False, loss=0.9),
        _run("d1", "sigmoid", steps=1000, reached=False, loss=0.7),
        _run("d2", "sigmoid", steps=50, reached=False, diverged=True, loss=0.1),
    ]
    board = _board(rows)
    assert list(board["activation"]) == ["elu", "relu", "sigmoid", "tanh"]
    assert list(board["rank"]) == [1, 2, 3, 4]
    elu = board.iloc[0]
    assert (elu["steps_to_target"], elu["depth"], elu["lr"], elu["run_id"]) == (150, 4, 0.3, "a2")
    assert elu["trials"] == 2
    # censored rows: steps null, best = the non-diverged trial even though a diverged one had lower loss
    sig = board.iloc[2]
    assert pd.isna(sig["steps_to_target"]) and not sig["reached"]
    assert sig["run_id"] == "d1"
    assert sig["diverged_fraction"] == 0.5


def test_ties_on_steps_break_by_final_loss() -> None:
    board = _board(
        [
            _run("x", "elu", steps=100, reached=True, loss=0.4),
            _run("y", "relu", steps=100, reached=True, loss=0.2),
        ]
    )
    assert list(board["activation"]) == ["relu", "elu"]


def test_failed_runs_count_as_trials_but_never_win() -> None:
    rows = [
        _run("f", "elu", steps=math.nan, reached=False, status="FAILED"),
        _run("g", "elu", steps=400, reached=True),
    ]
    board = _board(rows, ["elu", "gelu"])
    elu = board[board["activation"] == "elu"].iloc[0]
    assert (elu["trials"], elu["finished"], elu["run_id"]) == (2, 1, "g")
    gelu = board[board["activation"] == "gelu"].iloc[0]
    assert gelu["trials"] == 0 and pd.isna(gelu["run_id"]) and gelu["rank"] == 2


def test_records_are_json_safe_and_complete() -> None:
    board = _board(
        [
            _run("a", "elu", steps=100, reached=True, loss=math.inf),
            _run("b", "relu", steps=500, reached=False, loss=math.nan),
        ]
    )
    recs = to_records(board)
    text = json.dumps(recs, allow_nan=False)  # raises on NaN/inf
    assert set(json.loads(text)[0]) == set(COLUMNS)
    assert recs[0]["final_loss"] is None and recs[0]["steps_to_target"] == 100
    assert recs[1]["steps_to_target"] is None and recs[1]["reached"] is False


def test_all_formats_render() -> None:
    board = _board([_run("a", "elu", steps=100, reached=True)])
    assert json.loads(render(board, "json"))[0]["activation"] == "elu"
    csv = render(board, "csv").splitlines()
    assert csv[0].split(",") == list(COLUMNS) and csv[1].startswith("1,elu,True,100")
    md = render(board, "markdown").splitlines()
    assert md[0].startswith("| rank | activation") and len(md) == 3
    table = render(board, "table").splitlines()
    assert table[0].split()[:2] == ["rank", "activation"] and "elu" in table[2]


def test_empty_table_gives_one_row_per_stratum() -> None:
    board = compute_leaderboard(trials_table(pd.DataFrame()), ["relu", "elu"])
    assert list(board["activation"]) == ["relu", "elu"]
    assert list(board["trials"]) == [0, 0]
