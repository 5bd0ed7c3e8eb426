"""Mechanism diagnostics against hand-computed values and an independent plain-model
computation, and the train_cohort hook's contract (it never changes training)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models import (
    CohortSpec,
    Convergence,
    Member,
    MLPShape,
    build_cohort,
    build_mlp,
    load_dataset,
    train_cohort,
)
from models.diagnostics import (
    CohortDiagnostics,
    DiagnosticsConfig,
    probe_batch,
    summarize_curve,
)
from models.sharpness import top_hessian_eigenvalue

MOONS = load_dataset("moons")  # 2 features, 2 classes


def _cohort_with_biases(activation: str, biases: list[list[float]]) -> torch.nn.Module:
    """Depth 1, width 4: zero hidden weights, so unit k outputs activation(bias_k) everywhere."""
    shape = MLPShape(2, 2, 4, 1, activation)
    model = build_cohort(shape, ["kaiming_normal"] * len(biases), list(range(len(biases))))
    with torch.no_grad():
        model.weights[0].zero_()
        model.biases[0].copy_(torch.tensor(biases).view(len(biases), 1, 4))
    return model


def _measure(model: torch.nn.Module, members: int, **kw: object) -> dict[str, torch.Tensor]:
    diag = CohortDiagnostics(DiagnosticsConfig(**kw), MOONS, [0.1] * members)  # type: ignore[arg-type]
    return diag.measure(model, list(range(members)))


def test_bias_shift_and_dead_units_by_hand() -> None:
    # relu units with constant outputs [0, 0, 1, 2] and [0, 3, 3, 3]: unit means are those
    # values; the median over 4 units is the middle pair's mean: 0.5 and 3. Units with bias -1
    # have derivative 0 on every example: dead 2/4 and 1/4.
    out = _measure(_cohort_with_biases("relu", [[-1, -1, 1, 2], [-1, 3, 3, 3]]), 2)
    assert out["mean_act/l1"].tolist() == [0.5, 3.0]
    assert out["bias_shift"].tolist() == [0.5, 3.0]
    assert out["dead_fraction"].tolist() == [0.5, 0.25]
    assert out["saturated_fraction"].tolist() == [0.0, 0.0]


def test_saturated_units_by_hand() -> None:
    # tanh with biases [5, 5, 0, 0]: derivative 1 - tanh(5)^2 = 1.8e-4 < 0.05 on every example
    # for two units (saturated, not dead: the derivative is not exactly 0); the median unit mean
    # is (0 + tanh 5) / 2.
    out = _measure(_cohort_with_biases("tanh", [[5, 5, 0, 0]]), 1)
    assert out["saturated_fraction"].tolist() == [0.5]
    assert out["dead_fraction"].tolist() == [0.0]
    assert out["mean_act/l1"].item() == pytest.approx(math.tanh(5) / 2, rel=1e-6)


def test_gradient_norms_ratio_and_cosine_equal_a_plain_model_computation() -> None:
    shape = MLPShape(2, 2, 8, 3, "elu")
    inits, seeds, lrs = ["kaiming_normal", "xavier_normal"], [3, 4], [0.5, 5.0]
    cohort = build_cohort(shape, inits, seeds)
    diag = CohortDiagnostics(DiagnosticsConfig(probe_size=64), MOONS, lrs)
    out = diag.measure(cohort, [0, 1])
    x, y = probe_batch(MOONS, 64)
    for m in range(2):
        model = build_mlp(shape, inits[m], seeds[m])
        params = list(model.parameters())
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), params)
        weights = [g for p, g in zip(params, grads, strict=True) if p.dim() == 2]
        norms = [float(g.norm()) for g in weights]
        for k, norm in enumerate(norms, start=1):
            assert out[f"grad_norm/l{k}"][m].item() == pytest.approx(norm, rel=1e-4)
        assert out["grad_ratio"][m].item() == pytest.approx(norms[0] / norms[-1], rel=1e-4)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p -= lrs[m] * g
        after = torch.autograd.grad(F.cross_entropy(model(x), y), params)
        flat = torch.cat([g.flatten() for g in grads])
        flat_after = torch.cat([g.flatten() for g in after])
        cosine = float(flat @ flat_after / (flat.norm() * flat_after.norm()))
        assert out["grad_cosine"][m].item() == pytest.approx(cosine, abs=1e-4)
    # the bold step (lr 5) bounces more than the careful one (lr 0.5)
    assert out["grad_cosine"][1] < out["grad_cosine"][0]


def test_hook_never_changes_training_and_measures_every_kth_point() -> None:
    data = load_dataset("digits")
    conv = Convergence(target_loss=0.3, max_steps=300, eval_every=25)
    members = (Member("auto", 0.2, 0), Member("auto", 0.002, 1), Member("auto", 80.0, 2))
    spec = CohortSpec("relu", 2, 16, "momentum", batch_size=64, members=members)
    diag = CohortDiagnostics(DiagnosticsConfig(every=5), data, [m.lr for m in members])
    with_hook = train_cohort(data, spec, conv, on_eval=diag)
    without = train_cohort(data, spec, conv)
    assert [r.summary for r in with_hook] == [r.summary for r in without]
    assert [r.train_loss for r in with_hook] == [r.train_loss for r in without]
    slow = diag.curve(1)
    assert slow["steps"] == [25, 150, 275]  # evaluation points 1, 6, 11
    assert without[2].summary.diverged and without[2].summary.steps_trained == 25
    assert diag.curve(2)["steps"] == [25]  # stopped at its first point, still measured once
    assert set(slow["values"]) >= {"mean_act/l1", "mean_act/l2", "grad_norm/l3", "grad_cosine"}


def test_summary_is_the_early_mean() -> None:
    values = {
        "dead_fraction": [0.0, 0.2, 0.4, 0.2, 0.9],
        "grad_ratio": [10.0, 100.0, 1000.0, 10.0, 1e9],
        "grad_cosine": [math.nan, 0.5, 0.7, 0.9, -1.0],
    }
    out = summarize_curve(values)
    assert out["dead_fraction"] == pytest.approx(0.2)  # first 4 points
    assert out["grad_ratio_log10"] == pytest.approx((1 + 2 + 3 + 1) / 4)
    assert out["grad_cosine"] == pytest.approx(0.7)  # finite values among the first 4


def test_opt_in_sharpness_is_reported_against_two_over_lr() -> None:
    shape = MLPShape(2, 2, 8, 2, "tanh")
    cohort = build_cohort(shape, ["kaiming_normal"] * 2, [0, 1])
    lrs = [0.5, 2.0]
    config = DiagnosticsConfig(probe_size=64, sharpness=True, sharpness_iters=30)
    out = CohortDiagnostics(config, MOONS, lrs).measure(cohort, [0, 1])
    x, y = probe_batch(MOONS, 64)
    for m in range(2):
        alone = top_hessian_eigenvalue(build_mlp(shape, "kaiming_normal", m), x, y, iters=30)
        assert out["sharpness"][m].item() == pytest.approx(alone, rel=1e-3)
        assert out["sharpness_lr"][m].item() == pytest.approx(alone * lrs[m] / 2, rel=1e-3)
    # without the opt-in there is no sharpness at all (it is the expensive one)
    assert "sharpness" not in _measure(cohort, 2)
