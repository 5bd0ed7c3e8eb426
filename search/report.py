"""`actsweep report`: what a finished search says about why some activations converge faster,
written as report.md, report.html (+ PNG pictures) and report.json (every number behind the
text), and logged to the search's parent run.

Every number comes from MLflow: the child runs' metrics (aggregates and the per-seed
``seed{i}/...`` values), and the parent run's ``convergence_map.json`` (the lr probe). The
maths is pure (`seed_table`, `correlations`, `hypotheses`), so a test can recompute any
number from the same MLflow table.

Hypotheses and how each is judged (two-sided tests at ALPHA = 0.05; "inconclusive" when the
test is not significant or cannot be run -- with 3 seeds a single paired Wilcoxon can never
reach 0.05, which is why the factorial comparisons pool the matched pairs):

- smoothness: smooth activations reach the target in fewer steps than kinked ones of the same
  centring (pairs elu/srelu and softplus/relu, and any other present pair matched on the
  registry's ``centred`` flag, each at its tuned best configuration): paired Wilcoxon over all
  pairs x seeds of ln(steps) (a seed that missed counts as max_steps + 1); the effect is the
  geometric-mean ratio kinked / smooth (> 1: smooth faster).
- centring (bias shift, the ELU paper's explanation): the same with centred vs non-centred of
  the same smoothness (elu/softplus, srelu/relu), plus the correlation of the measured
  ``bias_shift`` with steps-to-target across all runs.
- dead units, saturation, vanishing gradients, bouncing: Spearman correlation across all runs
  (every seed of every trial) between the run's early-training diagnostic and its
  steps-to-target (misses as max_steps + 1); the story predicts a positive rho for
  dead_fraction, saturated_fraction and vanishing (-grad_ratio_log10), and a negative rho for
  grad_cosine (more bouncing, slower).
- bolder steps: smooth activations tolerate larger learning rates: the largest stable lr of the
  lr probe, smooth vs kinked in the same pairs (one probe each: direction only, no p-value).

Correlation is not causation: the text says "consistent with" for correlations and reserves
"supported" for the controlled (paired, matched) comparisons.
"""

from __future__ import annotations

import base64
import html
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from models.activations import get_activation
from search.convergence_map import convergence_map, pictures
from search.errors import SpecError
from search.leaderboard import compute_leaderboard, render, to_records, trials_table
from search.paths import resolve_tracking_uri
from search.results import find_search
from search.science import MAP_FILE
from search.tracking import trial_runs_of

ALPHA = 0.05
MECHANISMS = (
    "bias_shift",
    "dead_fraction",
    "saturated_fraction",
    "grad_ratio_log10",
    "grad_cosine",
    "sharpness_lr",
)
# The sign of rho each story predicts (steps grow with the diagnostic: +1).
PREDICTED_SIGN = {
    "bias_shift": 1,
    "dead_fraction": 1,
    "saturated_fraction": 1,
    "grad_ratio_log10": -1,  # vanishing = small first-layer gradients = low ratio = slower
    "grad_cosine": -1,
    "sharpness_lr": 1,
}
SECTIONS = (
    "Leaderboard",
    "Convergence map",
    "Learning-rate curves",
    "Diagnostics against steps to target",
    "What the data say",
    "Per activation",
    "Traceability",
)


@dataclass(frozen=True)
class SearchData:
    experiment: str
    search_id: str
    parent_run_id: str
    params: dict[str, str]
    runs: pd.DataFrame
    cmap: dict[str, Any]

    @property
    def activations(self) -> list[str]:
        return [a for a in self.params.get("space.activations", "").split(",") if a]

    @property
    def max_steps(self) -> int:
        return int(float(self.params.get("convergence.max_steps", "0") or 0))


# --- loading -------------------------------------------------------------------------------


def load_search(
    experiment: str, *, tracking_uri: str | None = None, search_id: str | None = None
) -> SearchData:
    found = find_search(experiment, tracking_uri=tracking_uri, search_id=search_id)
    uri, search_id, row = found.tracking_uri, found.search_id, found.parent
    params = {
        str(k)[len("params.") :]: str(v)
        for k, v in row.items()
        if str(k).startswith("params.") and isinstance(v, str)
    }
    runs = trial_runs_of(found.experiment_id, search_id, uri)
    client = MlflowClient(uri)
    parent = str(row["run_id"])
    cmap: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(parent, MAP_FILE, tmp)
            cmap = json.loads(Path(path).read_text())
        except Exception:  # an older or unfinished search: recompute the map without probes
            cmap = None
    if cmap is None:
        activations = [a for a in params.get("space.activations", "").split(",") if a]
        cmap = convergence_map(runs, activations, {})
    return SearchData(experiment, search_id, parent, params, runs, cmap)


# --- pure maths ----------------------------------------------------------------------------


def seed_table(runs: pd.DataFrame, max_steps: int) -> pd.DataFrame:
    """One row per (trial, seed) of finished trials: steps (misses as max_steps + 1),
    reached, and the seed's early-training diagnostics ``seed{i}/mech/<name>``."""
    rows = []
    if runs.empty:
        return pd.DataFrame(columns=["run_id", "activation", "seed", "steps", "reached"])
    done = runs[runs["status"] == "FINISHED"]
    for _, r in done.iterrows():
        i = 0
        while f"metrics.seed{i}/steps_to_target" in done.columns:
            steps = r.get(f"metrics.seed{i}/steps_to_target")
            if steps is None or not math.isfinite(float(steps)):
                break
            reached = float(r.get(f"metrics.seed{i}/reached", 0) or 0) > 0
            row: dict[str, Any] = {
                "run_id": r["run_id"],
                "activation": r.get("params.activation"),
                "seed": i,
                "steps": float(steps) if reached else float(max_steps + 1),
                "reached": reached,
            }
            for name in MECHANISMS:
                v = r.get(f"metrics.seed{i}/mech/{name}")
                row[name] = float(v) if v is not None and math.isfinite(float(v)) else math.nan
            rows.append(row)
            i += 1
    return pd.DataFrame(rows)


def correlations(seeds: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Spearman rho (and p, n) of each diagnostic against steps across all seed runs."""
    from scipy.stats import spearmanr

    out: dict[str, dict[str, Any]] = {}
    for name in MECHANISMS:
        if name not in seeds.columns:
            continue
        sub = seeds[np.isfinite(seeds[name].astype(float))]
        n = len(sub)
        rho = p = None
        if n >= 3 and sub[name].nunique() > 1 and sub["steps"].nunique() > 1:
            res = spearmanr(sub[name], sub["steps"])
            rho, p = float(res.statistic), float(res.pvalue)
        out[name] = {"rho": rho, "p": p, "n": n}
    return out


def _best_seed_steps(board: pd.DataFrame, trials: pd.DataFrame) -> dict[str, list[float]]:
    """Per activation, its best trial's per-seed steps with misses as max_steps + 1."""
    from search.stats import censored_value

    by_run = {r.run_id: r.seed_runs for r in trials.itertuples()}
    out: dict[str, list[float]] = {}
    for row in board.itertuples():
        runs = by_run.get(row.run_id)
        if runs is not None:
            out[str(row.activation)] = censored_value(runs)
    return out


def _pairs(activations: list[str], factor: str) -> list[tuple[str, str]]:
    """(with, without) pairs differing in `factor` (smooth | centred), matched on the other."""
    other = "centred" if factor == "smooth" else "smooth"
    pairs = []
    for a in activations:
        for b in activations:
            ia, ib = get_activation(a), get_activation(b)
            if (
                getattr(ia, factor)
                and not getattr(ib, factor)
                and getattr(ia, other) == getattr(ib, other)
            ):
                pairs.append((a, b))
    # Prefer the designed pairs of the smoothness x centring experiment when present.
    designed = {("elu", "srelu"), ("softplus", "relu"), ("elu", "softplus"), ("srelu", "relu")}
    chosen = [p for p in pairs if p in designed]
    return chosen or pairs


def paired_effect(steps: dict[str, list[float]], pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Pooled paired comparison: ln(steps without) - ln(steps with), over pairs x seeds."""
    from scipy.stats import wilcoxon

    diffs: list[float] = []
    used = []
    for a, b in pairs:
        if a in steps and b in steps:
            n = min(len(steps[a]), len(steps[b]))
            diffs += [math.log(steps[b][i]) - math.log(steps[a][i]) for i in range(n)]
            used.append([a, b])
    out: dict[str, Any] = {"pairs": used, "n": len(diffs), "ratio": None, "p": None}
    if diffs:
        out["ratio"] = float(math.exp(sum(diffs) / len(diffs)))
    nonzero = [d for d in diffs if d != 0]
    if len(nonzero) >= 2:
        out["p"] = float(wilcoxon(diffs, alternative="two-sided").pvalue)
    return out


def _verdict(effect_positive: bool | None, p: float | None, controlled: bool) -> str:
    if effect_positive is None or p is None or not math.isfinite(p) or p >= ALPHA:
        return "inconclusive"
    if effect_positive:
        return "supported" if controlled else "consistent"
    return "contradicted"


def _sureness(p: float | None, n: int) -> str:
    if p is None:
        return f"cannot say (n = {n})"
    if p < 0.001:
        return f"very sure (p = {p:.2g}, n = {n})"
    if p < 0.01:
        return f"sure (p = {p:.2g}, n = {n})"
    if p < ALPHA:
        return f"fairly sure (p = {p:.2g}, n = {n})"
    return f"not sure (p = {p:.2g}, n = {n})"


def hypotheses(
    board: pd.DataFrame,
    trials: pd.DataFrame,
    corr: dict[str, dict[str, Any]],
    probes: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """Each popular story with its evidence, verdict and sureness (pure)."""
    activations = [str(a) for a in board["activation"]]
    steps = _best_seed_steps(board, trials)
    out: list[dict[str, Any]] = []

    smooth = paired_effect(steps, _pairs(activations, "smooth"))
    out.append(
        {
            "key": "smoothness",
            "claim": "Smooth (C^1) activations converge in fewer steps than kinked ones "
            "(ReLU's undefined derivative at 0 slows gradient descent).",
            "evidence": smooth,
            "text": _effect_text(smooth, "kinked", "smooth"),
            "verdict": _verdict(
                None if smooth["ratio"] is None else smooth["ratio"] > 1, smooth["p"], True
            ),
            "sureness": _sureness(smooth["p"], smooth["n"]),
        }
    )
    centred = paired_effect(steps, _pairs(activations, "centred"))
    bias = corr.get("bias_shift", {})
    out.append(
        {
            "key": "centring",
            "claim": "Activations centred near zero converge faster (the ELU paper's bias "
            "shift: mean unit activations away from zero slow learning).",
            "evidence": {**centred, "bias_shift_spearman": bias},
            "text": _effect_text(centred, "non-centred", "centred")
            + " "
            + _corr_text("bias_shift", bias),
            "verdict": _verdict(
                None if centred["ratio"] is None else centred["ratio"] > 1, centred["p"], True
            ),
            "sureness": _sureness(centred["p"], centred["n"]),
        }
    )
    stories = (
        ("dead_units", "dead_fraction", "Dead ReLU units (zero on every input) slow convergence."),
        (
            "saturation",
            "saturated_fraction",
            "Saturated units (derivative < 0.05; tanh, sigmoid, ELU's negative side) slow "
            "convergence.",
        ),
        (
            "vanishing_gradients",
            "grad_ratio_log10",
            "Vanishing gradients (first layers get much smaller gradients than the last) slow "
            "convergence, as with tanh and sigmoid.",
        ),
        (
            "bouncing",
            "grad_cosine",
            "Gradient steps that overshoot and bounce (the gradient after a step points back) "
            "slow convergence.",
        ),
    )
    for key, name, claim in stories:
        c = corr.get(name, {"rho": None, "p": None, "n": 0})
        sign = None if c.get("rho") is None else (c["rho"] * PREDICTED_SIGN[name] > 0)
        out.append(
            {
                "key": key,
                "claim": claim,
                "evidence": {"diagnostic": name, **c},
                "text": _corr_text(name, c),
                "verdict": _verdict(sign, c.get("p"), False),
                "sureness": _sureness(c.get("p"), int(c.get("n", 0))),
            }
        )
    bold = []
    for a, b in _pairs(activations, "smooth"):
        pa, pb = probes.get(a) or {}, probes.get(b) or {}
        la, lb = pa.get("largest_stable_lr"), pb.get("largest_stable_lr")
        if not (la and lb):
            continue
        # A probe that never diverged gives only a lower bound; a direction is known only when
        # the smaller value is exact (its probe did diverge).
        known = (la > lb and pb.get("diverged_at") is not None) or (
            la < lb and pa.get("diverged_at") is not None
        )
        bold.append(
            {
                "smooth": a,
                "kinked": b,
                "smooth_lr": la,
                "kinked_lr": lb,
                "ratio": la / lb,
                "direction_known": known,
            }
        )
    ratios = [x["ratio"] for x in bold if x["direction_known"]]
    direction: bool | None = None
    if ratios and all(r > 1 for r in ratios):
        direction = True
    elif ratios and all(r < 1 for r in ratios):
        direction = False
    text = (
        "; ".join(
            f"{x['smooth']} stays stable up to lr {x['smooth_lr']:.3g} against {x['kinked']}'s "
            f"{x['kinked_lr']:.3g} (x{x['ratio']:.2f}"
            + ("" if x["direction_known"] else "; a lower bound, so no direction")
            + ")"
            for x in bold
        )
        or "no lr probe data for a matched smooth/kinked pair"
    )
    out.append(
        {
            "key": "bolder_steps",
            "claim": "Smoothness allows bolder steps: smooth activations tolerate larger "
            "learning rates before training diverges.",
            "evidence": {"pairs": bold},
            "text": text + ".",
            "verdict": "inconclusive"
            if direction is None
            else ("consistent" if direction else "contradicted"),
            "sureness": f"direction only (one lr probe per activation, {len(ratios)} of "
            f"{len(bold)} pairs with a known direction)",
        }
    )
    return out


def _effect_text(effect: dict[str, Any], without: str, with_: str) -> str:
    if effect["ratio"] is None:
        return f"No matched {with_}/{without} pair reached a comparison."
    pairs = ", ".join(f"{a} vs {b}" for a, b in effect["pairs"])
    r = effect["ratio"]
    faster = with_ if r > 1 else without
    factor = r if r > 1 else 1 / r
    p = "n/a" if effect["p"] is None else f"{effect['p']:.3g}"
    return (
        f"Matched pairs ({pairs}), each at its tuned best configuration: the {faster} member "
        f"of a pair needs x{factor:.2f} fewer steps (geometric mean over {effect['n']} paired "
        f"seeds; paired Wilcoxon p = {p})."
    )


def _corr_text(name: str, c: dict[str, Any]) -> str:
    if c.get("rho") is None:
        return f"{name}: too little variation to correlate (n = {c.get('n', 0)})."
    return (
        f"Across all {c['n']} seed runs, Spearman rho({name}, steps to target) = {c['rho']:+.2f} "
        f"(p = {c['p']:.3g})."
    )


def per_activation(
    board: pd.DataFrame, runs: pd.DataFrame, probes: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Per activation: its leaderboard row, its best trial's mechanism medians, its probe."""
    by_id = runs.set_index("run_id") if not runs.empty else pd.DataFrame()
    out: dict[str, dict[str, Any]] = {}
    for rec in to_records(board):
        act = rec["activation"]
        mech: dict[str, float] = {}
        if rec["run_id"] is not None and rec["run_id"] in by_id.index:
            r = by_id.loc[rec["run_id"]]
            for name in MECHANISMS:
                v = r.get(f"metrics.mech/{name}")
                if v is not None and math.isfinite(float(v)):
                    mech[name] = float(v)
        probe = probes.get(act) or {}
        out[act] = {
            "row": rec,
            "mechanisms": mech,
            "largest_stable_lr": probe.get("largest_stable_lr"),
            "diverged_at": probe.get("diverged_at"),
            "smooth": get_activation(act).smooth,
            "centred": get_activation(act).centred,
        }
    return out


def _activation_text(act: str, info: dict[str, Any]) -> str:
    row = info["row"]
    kind = f"{'smooth' if info['smooth'] else 'kinked'}, {'centred' if info['centred'] else 'not centred'}"
    if row["run_id"] is None:
        return f"**{act}** ({kind}): no finished trial."
    if row["reached"]:
        ci = (
            f"95 % CI [{row['ci_low']:.0f}, {'unbounded' if row['ci_high'] is None else format(row['ci_high'], '.0f')}]"
            if row["ci_low"] is not None
            else "no interval (one seed)"
        )
        head = (
            f"**{act}** ({kind}) ranks {row['rank']}: {row['steps_to_target']} steps (KM median over "
            f"{row['seeds']} seeds, {ci}, {100 * row['success_rate']:.0f} % of seeds reached) at "
            f"depth {row['depth']}, init {row['init']}, lr {row['lr']:.3g}."
        )
    else:
        head = (
            f"**{act}** ({kind}) ranks {row['rank']}: its best configuration (depth {row['depth']}, "
            f"lr {row['lr']:.3g}) did not reach the target on at least half its seeds."
        )
    if row.get("rank_stability") is not None:
        head += f" It keeps this rank in {100 * row['rank_stability']:.0f} % of seed resamples"
        head += (
            f"; against the next rank, paired Wilcoxon p = {row['p_vs_next']:.3g}."
            if row.get("p_vs_next") is not None
            else "."
        )
    m = info["mechanisms"]
    parts = []
    if "bias_shift" in m:
        parts.append(f"bias shift {m['bias_shift']:.3f}")
    if "dead_fraction" in m:
        parts.append(f"dead units {100 * m['dead_fraction']:.1f} %")
    if "saturated_fraction" in m:
        parts.append(f"saturated units {100 * m['saturated_fraction']:.1f} %")
    if "grad_ratio_log10" in m:
        parts.append(f"first/last gradient ratio 10^{m['grad_ratio_log10']:+.2f}")
    if "grad_cosine" in m:
        parts.append(f"gradient cosine after a step {m['grad_cosine']:+.3f}")
    if parts:
        head += (
            " Early training on the best configuration (median over seeds): "
            + ", ".join(parts)
            + "."
        )
    if info["largest_stable_lr"] is not None:
        bound = "" if info["diverged_at"] is not None else " (no divergence found: a lower bound)"
        head += f" Largest stable lr {info['largest_stable_lr']:.3g}{bound}."
    return head


def build_report(data: SearchData) -> dict[str, Any]:
    """Everything the report shows, as plain data (written as report.json)."""
    trials = trials_table(data.runs)
    board = compute_leaderboard(trials, data.activations or None)
    seeds = seed_table(data.runs, data.max_steps)
    corr = correlations(seeds)
    probes = data.cmap.get("lr_probe", {})
    hyps = hypotheses(board, trials, corr, probes)
    return {
        "experiment": data.experiment,
        "search_id": data.search_id,
        "parent_run_id": data.parent_run_id,
        "dataset": data.params.get("dataset.name"),
        "seeds": data.params.get("seeds"),
        "max_steps": data.max_steps,
        "trials": len(data.runs),
        "leaderboard": to_records(board),
        "leaderboard_markdown": render(board, "markdown"),
        "convergence_map": data.cmap,
        "correlations": corr,
        "seed_runs": len(seeds),
        "hypotheses": hyps,
        "activations": per_activation(board, data.runs, probes),
        "question": _question_text(board, hyps),
    }


def _question_text(board: pd.DataFrame, hyps: list[dict[str, Any]]) -> str:
    by = {h["key"]: h for h in hyps}
    supported = [h["key"] for h in hyps if h["verdict"] in ("supported", "consistent")]
    contradicted = [h["key"] for h in hyps if h["verdict"] == "contradicted"]
    inconclusive = [h["key"] for h in hyps if h["verdict"] == "inconclusive"]
    first = board.iloc[0] if len(board) else None
    lead = (
        f"Fastest here: {first['activation']} ({first['steps_to_target']} steps)."
        if first is not None and bool(first["reached"])
        else "No activation reached the target."
    )
    return " ".join(
        [
            lead,
            f"Do smooth activations converge faster? {by['smoothness']['verdict']}: "
            f"{by['smoothness']['text']}",
            f"Is it centring instead? {by['centring']['verdict']}: {by['centring']['text']}",
            f"Supported or consistent with the data: {', '.join(supported) or 'none'}.",
            f"Contradicted: {', '.join(contradicted) or 'none'}.",
            f"Inconclusive at this sample size: {', '.join(inconclusive) or 'none'}.",
        ]
    )


# --- rendering -----------------------------------------------------------------------------


def scatter_png(seeds: pd.DataFrame, corr: dict[str, dict[str, Any]], max_steps: int) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in MECHANISMS if n in seeds.columns and seeds[n].notna().any()]
    cols = 3
    rows = max(1, math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    acts = sorted(set(seeds["activation"])) if len(seeds) else []
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, name in enumerate(names):
        ax = axes[k // cols][k % cols]
        for j, act in enumerate(acts):
            sub = seeds[seeds["activation"] == act]
            ax.scatter(sub[name], sub["steps"], s=8, color=colours[j % len(colours)], label=act)
        c = corr.get(name, {})
        rho = "n/a" if c.get("rho") is None else f"{c['rho']:+.2f}"
        ax.set_title(f"{name}: rho {rho}", fontsize=9)
        ax.axhline(max_steps + 1, color="grey", lw=0.5, ls=":")
        ax.set_ylabel("steps to target")
    for k in range(len(names), rows * cols):
        axes[k // cols][k % cols].axis("off")
    if names and acts:
        axes[0][0].legend(fontsize=6)
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _grid_md(grid: dict[str, Any], key: str) -> str:
    cols = grid[key + "s"]
    lines = ["| activation | " + " | ".join(str(c) for c in cols) + " |"]
    lines.append("|---" * (len(cols) + 1) + "|")
    for act, row in zip(grid["activations"], grid["best_steps"], strict=True):
        cells = ["-" if v is None else f"{v:.0f}" for v in row]
        lines.append(f"| {act} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_markdown(report: dict[str, Any]) -> str:
    cmap = report["convergence_map"]
    out = [
        f"# actsweep report: {report['search_id']}",
        "",
        f"Experiment `{report['experiment']}`, parent run `{report['parent_run_id']}`, dataset "
        f"{report['dataset']}, {report['trials']} trials x {report['seeds']} paired seeds, "
        f"max_steps {report['max_steps']}.",
        "",
        "## Leaderboard",
        "",
        "steps_to_target is the Kaplan-Meier median over seeds; ci_low/ci_high its 95 % "
        "bootstrap interval; p_vs_next the paired Wilcoxon p-value against the next rank.",
        "",
        report["leaderboard_markdown"],
        "## Convergence map",
        "",
        "Best steps to target per depth (- : never reached):",
        "",
        _grid_md(cmap["by_depth"], "depth"),
        "",
        "![by depth](report_files/heatmap_depth.png)",
        "",
        "Best steps to target per initializer:",
        "",
        _grid_md(cmap["by_init"], "init"),
        "",
        "![by init](report_files/heatmap_init.png)",
        "",
        "## Learning-rate curves",
        "",
        "![lr curves](report_files/lr_curves.png)",
        "",
        "| activation | best lr | largest stable lr | first diverging lr |",
        "|---|---|---|---|",
    ]
    for act, info in report["activations"].items():
        lr = info["row"]["lr"]
        stable, div = info["largest_stable_lr"], info["diverged_at"]
        out.append(
            f"| {act} | {'-' if lr is None else f'{lr:.4g}'} | "
            f"{'-' if stable is None else f'{stable:.4g}'} | {'-' if div is None else f'{div:.4g}'} |"
        )
    out += [
        "",
        "## Diagnostics against steps to target",
        "",
        f"Spearman correlation over {report['seed_runs']} seed runs (every seed of every trial; "
        "a seed that missed the target counts as max_steps + 1). Each diagnostic is the run's "
        "early-training mean (models.diagnostics).",
        "",
        "| diagnostic | rho | p | n |",
        "|---|---|---|---|",
    ]
    for name, c in report["correlations"].items():
        rho = "-" if c["rho"] is None else f"{c['rho']:+.3f}"
        p = "-" if c["p"] is None else f"{c['p']:.3g}"
        out.append(f"| {name} | {rho} | {p} | {c['n']} |")
    out += ["", "![diagnostics](report_files/diagnostics.png)", "", "## What the data say", ""]
    out.append(report["question"])
    out.append("")
    out += ["| hypothesis | verdict | how sure | evidence |", "|---|---|---|---|"]
    for h in report["hypotheses"]:
        out.append(f"| {h['claim']} | **{h['verdict']}** | {h['sureness']} | {h['text']} |")
    out += [
        "",
        '"supported"/"contradicted" come from controlled, paired comparisons (p < 0.05); '
        '"consistent" from correlations across runs, which do not show cause.',
        "",
        "## Per activation",
        "",
    ]
    for act, info in report["activations"].items():
        out += [_activation_text(act, info), ""]
    out += [
        "## Traceability",
        "",
        "Every number above is in MLflow: leaderboard rows are child runs (`run_id`) whose "
        "metrics `steps_to_target`, `seed{i}/steps_to_target`, `seed{i}/reached` and "
        "`seed{i}/mech/<name>` are the inputs; the convergence map and lr probe are the parent "
        "run's `convergence_map.json`; report.json holds every value shown here.",
        "",
        "| activation | best run |",
        "|---|---|",
    ]
    for act, info in report["activations"].items():
        out.append(f"| {act} | {info['row']['run_id'] or '-'} |")
    return "\n".join(out) + "\n"


def _md_to_html(md: str, images: dict[str, bytes]) -> str:
    """A small Markdown subset (headings, tables, paragraphs, images, bold, code) to HTML,
    images embedded as base64 so report.html is one self-contained file."""
    import re

    def inline(text: str) -> str:
        t = html.escape(text, quote=False)
        t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
        return re.sub(r"`(.+?)`", r"<code>\1</code>", t)

    body: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{inline(line[level:].strip())}</h{level}>")
        elif line.startswith("!["):
            m = re.match(r"!\[(.*)\]\((.*)\)", line)
            if m:
                name = Path(m.group(2)).name
                data = base64.b64encode(images.get(name, b"")).decode()
                body.append(
                    f'<p><img alt="{html.escape(m.group(1))}" src="data:image/png;base64,{data}"></p>'
                )
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(lines[i])
                i += 1
            cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
            head, rest = cells[0], [r for r in cells[2:]]
            body.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr>")
            body += ["<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in rest]
            body.append("</table>")
            continue
        elif line.strip():
            body.append(f"<p>{inline(line)}</p>")
        i += 1
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
        "table{border-collapse:collapse;margin:1em 0;font-size:90%}"
        "td,th{border:1px solid #ccc;padding:3px 6px}img{max-width:100%}"
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>actsweep report</title>"
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_report(
    experiment: str,
    out_dir: str | Path,
    *,
    tracking_uri: str | None = None,
    search_id: str | None = None,
    log_to_mlflow: bool = True,
) -> dict[str, Any]:
    """Build the report from MLflow, write it to ``out_dir`` and log it to the parent run."""
    data = load_search(experiment, tracking_uri=tracking_uri, search_id=search_id)
    report = build_report(data)
    seeds = seed_table(data.runs, data.max_steps)
    images = pictures(data.cmap, data.max_steps)
    images["diagnostics.png"] = scatter_png(seeds, report["correlations"], data.max_steps)
    out = Path(out_dir)
    try:
        (out / "report_files").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SpecError("--out", f"cannot create {out}: {err.strerror}") from None
    for name, png in images.items():
        (out / "report_files" / name).write_bytes(png)
    md = render_markdown(report)
    (out / "report.md").write_text(md)
    (out / "report.html").write_text(_md_to_html(md, images))
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    if log_to_mlflow:
        client = MlflowClient(resolve_tracking_uri(tracking_uri, None))
        for name in ("report.md", "report.html", "report.json"):
            client.log_artifact(data.parent_run_id, str(out / name), artifact_path="report")
        client.log_artifacts(
            data.parent_run_id, str(out / "report_files"), artifact_path="report/report_files"
        )
    return report
