"""The leaderboard never shows NaN or infinity, whatever numbers the store holds.

MLflow keeps NaN metrics as NaN and infinities as +-1.797e308; stores written by older
versions or other tools may hold them in any metric. Tables in `mlflow.search_runs`' shape.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from search.leaderboard import FORMATS, compute_leaderboard, render, trials_table

NON_FINITE = re.compile(r"(?i)\b(nan|inf|infinity)\b")
odd = st.sampled_from([math.nan, math.inf, -math.inf, 1.7976931348623157e308, -1.0, 0.0])
number = st.one_of(odd, st.floats(0, 2000, allow_nan=False), st.integers(0, 2000).map(float))
flag = st.one_of(st.sampled_from([0.0, 1.0]), odd)


@st.composite
def runs(draw: st.DrawFn) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    for i in range(draw(st.integers(1, 6))):
        row: dict[str, Any] = {
            "run_id": f"r{i:02d}",
            "status": draw(st.sampled_from(["FINISHED", "FINISHED", "FAILED", "RUNNING"])),
            "params.activation": draw(st.sampled_from(["relu", "tanh"])),
            "params.depth": draw(st.sampled_from(["2", "nan", "inf", "x"])),
            "params.init": "auto",
            "params.lr": draw(st.sampled_from(["0.1", "nan", "inf", "-inf", "1e400"])),
            "params.optimizer": "sgd",
            "params.max_steps": draw(st.sampled_from(["200", "nan", "inf"])),
            "metrics.steps_to_target": draw(number),
            "metrics.reached": draw(flag),
            "metrics.diverged": draw(flag),
            "metrics.final_loss": draw(number),
            "metrics.score": draw(number),
        }
        for s in range(draw(st.integers(0, 3))):
            row[f"metrics.seed{s}/steps_to_target"] = draw(number)
            row[f"metrics.seed{s}/reached"] = draw(flag)
            row[f"metrics.seed{s}/diverged"] = draw(flag)
            row[f"metrics.seed{s}/score"] = draw(number)
        rows.append(row)
    return pd.DataFrame(rows)


def _reject(name: str) -> float:
    raise AssertionError(f"JSON holds {name}")


@settings(max_examples=60, deadline=None, database=None)
@given(runs())
def test_no_nan_or_infinity_in_any_format(table: pd.DataFrame) -> None:
    board = compute_leaderboard(trials_table(table), ["relu", "tanh"])
    assert list(board["activation"]).count("relu") == 1
    for fmt in FORMATS:
        text = render(board, fmt)
        assert not NON_FINITE.search(text), (fmt, text)
        if fmt == "json":
            for row in json.loads(text, parse_constant=_reject):
                for v in row.values():
                    assert not isinstance(v, float) or abs(v) < 1e300, row
