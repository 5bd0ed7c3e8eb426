"""`actsweep report` end to end on a small version of examples/smoothness_vs_centering.yaml:
a real search (local Ray, SQLite MLflow), then the report, whose numbers must equal what
MLflow holds (recomputed here independently from the child runs' metrics)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import mlflow
import pytest
import yaml
from scipy.stats import spearmanr

from search.report import SECTIONS
from search.stats import km_median
from tests.search.conftest import write_spec
from tests.search.test_cli_e2e import REPO, actsweep

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("report")
    spec = yaml.safe_load((REPO / "examples" / "smoothness_vs_centering.yaml").read_text())
    spec.update(name="smooth-small", dataset="digits", seeds=3, model={"width": 16})
    spec["space"].update(
        activations=["elu", "srelu", "softplus", "relu"],
        depth={"low": 2, "high": 3},
        lr={"low": 0.02, "high": 0.5},
        batch_size=64,
    )
    spec["convergence"] = {"target_loss": 0.5, "max_steps": 200, "eval_every": 25}
    spec["budget"] = {"trials_per_activation": 3, "cohort_size": 3}
    spec["sampler"] = {"name": "random"}
    spec["diagnostics"] = {"every": 2, "probe_size": 64}
    spec["lr_probe"] = {"points": 3, "rounds": 2}
    path = write_spec(tmp / "smooth.yaml", spec)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    run = actsweep(tmp, "run", str(path), "--tracking-uri", uri)
    assert run.returncode == 0, run.stderr[-3000:]
    rep = actsweep(tmp, "report", "smooth-small", "--out", str(tmp / "out"), "--tracking-uri", uri)
    assert rep.returncode == 0, rep.stderr[-3000:]
    mlflow.set_tracking_uri(uri)
    children = mlflow.search_runs(
        experiment_names=["smooth-small"], filter_string="tags.`actsweep.role` = 'trial'"
    )
    return {"tmp": tmp, "uri": uri, "out": tmp / "out", "children": children, "stdout": rep.stdout}


def _seed_values(row: Any, key: str) -> list[float]:
    values, i = [], 0
    while f"metrics.seed{i}/{key}" in row.index and not math.isnan(row[f"metrics.seed{i}/{key}"]):
        values.append(float(row[f"metrics.seed{i}/{key}"]))
        i += 1
    return values


def test_report_files_hold_every_section_and_picture(reported: dict[str, Any]) -> None:
    out: Path = reported["out"]
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    for section in SECTIONS:
        assert f"## {section}" in md and f"<h2>{section}</h2>" in page, section
    for name in ("heatmap_depth.png", "heatmap_init.png", "lr_curves.png", "diagnostics.png"):
        assert (out / "report_files" / name).read_bytes()[:4] == b"\x89PNG"
    assert page.count("data:image/png;base64,") == 4  # self-contained
    client = mlflow.MlflowClient(reported["uri"])
    parent_id = reported["children"]["tags.mlflow.parentRunId"].iloc[0]
    top = {a.path for a in client.list_artifacts(parent_id)}
    assert {"convergence_map.json", "convergence_map", "report"} <= top
    assert {a.path for a in client.list_artifacts(parent_id, "report")} >= {
        "report/report.md",
        "report/report.html",
    }


def test_trials_hold_paired_seeds_and_their_km_median(reported: dict[str, Any]) -> None:
    children = reported["children"]
    assert len(children) == 12
    assert children["params.run_seeds"].nunique() == 1  # the same seeds for every activation
    assert set(children["params.seeds"]) == {"3"}
    for _, row in children.iterrows():
        steps, reached = _seed_values(row, "steps_to_target"), _seed_values(row, "reached")
        diverged = _seed_values(row, "diverged")
        assert len(steps) == 3
        times = [
            200.0 if d and not r else s for s, r, d in zip(steps, reached, diverged, strict=True)
        ]
        km = km_median(times, [r > 0 for r in reached])
        assert row["metrics.reached"] == float(km is not None)
        if km is not None:
            assert row["metrics.steps_to_target"] == km == row["metrics.score"]
        assert row["metrics.success_rate"] == pytest.approx(sum(reached) / 3)


def test_report_numbers_equal_mlflow(reported: dict[str, Any]) -> None:
    report = json.loads((reported["out"] / "report.json").read_text())
    children = reported["children"].set_index("run_id")
    board = json.loads(
        actsweep(
            reported["tmp"],
            "leaderboard",
            "smooth-small",
            "--format",
            "json",
            "--tracking-uri",
            reported["uri"],
        ).stdout
    )
    assert report["leaderboard"] == board
    md = (reported["out"] / "report.md").read_text()
    for row in board:
        child = children.loc[row["run_id"]]
        reached = _seed_values(child, "reached")
        assert row["success_rate"] == pytest.approx(sum(reached) / len(reached))
        assert row["seeds"] == len(reached)
        if row["reached"]:
            assert row["steps_to_target"] == child["metrics.steps_to_target"]
            assert f"ranks {row['rank']}: {row['steps_to_target']} steps" in md
    # Spearman of each diagnostic against steps, recomputed from the per-seed metrics
    for name, corr in report["correlations"].items():
        xs, ys = [], []
        for _, child in children.iterrows():
            steps = _seed_values(child, "steps_to_target")
            reached = _seed_values(child, "reached")
            for i in range(len(steps)):
                v = child.get(f"metrics.seed{i}/mech/{name}")
                if v is not None and math.isfinite(v):
                    xs.append(v)
                    ys.append(steps[i] if reached[i] else 201.0)
        assert corr["n"] == len(xs), name
        if corr["rho"] is not None:
            res = spearmanr(xs, ys)
            assert corr["rho"] == pytest.approx(float(res.statistic)), name
            assert f"{corr['rho']:+.3f}" in md
    # the convergence map's cells are the best reached child runs
    by_depth = report["convergence_map"]["by_depth"]
    for act, row, ids in zip(
        by_depth["activations"], by_depth["best_steps"], by_depth["run_ids"], strict=True
    ):
        for depth, best, run_id in zip(by_depth["depths"], row, ids, strict=True):
            mine = children[
                (children["params.activation"] == act)
                & (children["params.depth"] == str(depth))
                & (children["metrics.reached"] == 1.0)
            ]
            if mine.empty:
                assert best is None
            else:
                assert best == mine["metrics.steps_to_target"].min()
                assert children.loc[run_id, "metrics.steps_to_target"] == best
    # every activation's lr probe started at its best lr and the text quotes its result
    for act, info in report["activations"].items():
        probe = report["convergence_map"]["lr_probe"][act]
        assert probe["best_lr"] == info["row"]["lr"]
        assert info["largest_stable_lr"] == probe["largest_stable_lr"]
    assert {h["key"] for h in report["hypotheses"]} >= {"smoothness", "centring", "dead_units"}
    assert "Do smooth activations converge faster?" in reported["stdout"]
