"""The parent run's plots: the tables behind them, and PNGs a browser can show."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
from PIL import Image

from search.plots import best_steps_by_depth, heatmap_png, loss_curves_png, tried_by_depth


def _trials() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run_id": list("abcdefg"),
            "status": ["FINISHED"] * 6 + ["FAILED"],
            "activation": ["relu", "relu", "relu", "elu", "elu", "tanh", "tanh"],
            "depth": [1, 1, 3, 1, 2, 2, 1],
            "reached": [True, True, False, True, False, False, True],
            "steps_to_target": [90.0, 60.0, 200.0, 40.0, 200.0, 200.0, 10.0],
        }
    )


def _png(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_best_steps_by_depth_takes_the_fewest_steps_of_reached_finished_trials() -> None:
    table = best_steps_by_depth(_trials(), ["relu", "elu", "tanh", "gelu"])
    assert list(table.index) == ["relu", "elu", "tanh", "gelu"]
    assert list(table.columns) == [1, 2, 3]
    assert table.loc["relu", 1] == 60.0  # min over two reached trials
    assert math.isnan(table.loc["relu", 3])  # tried, never reached
    assert table.loc["elu", 1] == 40.0 and math.isnan(table.loc["elu", 2])
    assert math.isnan(table.loc["tanh", 1])  # the only reached tanh trial FAILED
    assert table.loc["gelu"].isna().all()  # never tried
    tried = tried_by_depth(_trials(), table)
    assert tried.loc["relu"].tolist() == [2, 0, 1]
    assert tried.loc["tanh"].tolist() == [0, 1, 0]  # the failed trial does not count
    assert tried.loc["gelu"].tolist() == [0, 0, 0]


def test_plots_are_real_pngs_even_for_empty_searches() -> None:
    table = best_steps_by_depth(_trials(), ["relu", "elu", "tanh"])
    heat = _png(heatmap_png(table, tried_by_depth(_trials(), table), "s\nsteps"))
    assert heat.width > 300 and heat.height > 150
    curves = {"relu": ([10, 20, 30], [2.0, 1.0, 0.4]), "elu": ([10, 20], [np.inf, 0.5])}
    lines = _png(loss_curves_png(curves, 0.5, "s"))
    assert lines.width > 300 and lines.height > 200
    empty = best_steps_by_depth(_trials().iloc[:0], ["relu"])
    assert list(empty.index) == ["relu"] and empty.empty
    _png(heatmap_png(empty, None, "nothing ran"))
    _png(loss_curves_png({}, None, "nothing ran"))
