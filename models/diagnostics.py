"""Mechanism diagnostics: the measurements that test the stories told about why some
activations make gradient descent converge faster, taken on a fixed probe batch at evaluation
points of `train_cohort` (its ``on_eval`` hook), for every cohort member at once.

Measured at a diagnostic point, per member (``H`` hidden units per layer, ``P`` probe examples):

============================  ==============================================================
name                          definition (why)
============================  ==============================================================
``mean_act/l{k}``             hidden layer k (1-based): the median over units of each unit's
                              mean activation over the probe batch (Clevert et al. 2016's
                              bias-shift measure: ELU's claim is that it keeps this near 0)
``bias_shift``                mean over hidden layers of |mean_act/l{k}|
``dead_fraction``             hidden units whose activation derivative is exactly 0 on every
                              probe example (for ReLU: output 0 on every example, the usual
                              "dead ReLU"; the derivative form also catches srelu's floor)
``saturated_fraction``        hidden units, not dead, with |derivative| < 0.05 on more than
                              half the probe examples (tanh/sigmoid/ELU saturation)
``grad_norm/l{k}``            Frobenius norm of layer k's weight gradient of the probe loss,
                              k = 1..depth + 1 (the last is the output layer)
``grad_ratio``                grad_norm/l1 / grad_norm/l{depth+1}: first-to-last layer
                              (vanishing < 1 < exploding)
``grad_cosine``               cosine between the probe gradient g(w) and the probe gradient
                              after one plain gradient step at the member's own lr,
                              g(w - lr g(w)); the model is not changed. Near 1: the step is
                              small against the curvature; negative: it overshoots the valley
                              floor and the gradient bounces back ("bouncing")
``sharpness`` (opt-in)        top algebraic eigenvalue of the Hessian of the probe loss
                              (Lanczos on Hessian-vector products, models.sharpness)
``sharpness_lr`` (opt-in)     sharpness * lr / 2: plain gradient descent is stable along the
                              top direction only below 1 (Cohen et al. 2021's 2/lr edge;
                              heavy-ball momentum mu moves the edge to 2 (1 + mu) / lr)
============================  ==============================================================

Per-member summaries (`summary`) are the mean of each scalar over the member's first
`EARLY_POINTS` diagnostic points: the early phase that decides how fast a run converges, and
a window every run has, so a run that trains longer does not get a different average just
because it trained longer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from models.datasets import Dataset
from models.mlp import CohortMLP
from models.sharpness import cohort_sharpness

__all__ = [
    "EARLY_POINTS",
    "PROBE_SEED",
    "SATURATION_THRESHOLD",
    "SCALARS",
    "CohortDiagnostics",
    "DiagnosticsConfig",
    "probe_batch",
]

PROBE_SEED = 20240229  # a constant: the probe batch is the same for every run and activation
SATURATION_THRESHOLD = 0.05
EARLY_POINTS = 4
SCALARS = (
    "bias_shift",
    "dead_fraction",
    "saturated_fraction",
    "grad_ratio",
    "grad_cosine",
    "sharpness",
    "sharpness_lr",
)
"""Diagnostics with one value per point (summarised per run); the rest are per layer."""


@dataclass(frozen=True)
class DiagnosticsConfig:
    every: int = 5
    """Evaluation points between diagnostic points (1 = at every evaluation point); the first
    evaluation point is always measured."""
    probe_size: int = 256
    sharpness: bool = False
    sharpness_iters: int = 20

    def __post_init__(self) -> None:
        if self.every < 1 or self.probe_size < 1 or self.sharpness_iters < 2:
            raise ValueError(f"invalid diagnostics config {self}")


def probe_batch(data: Dataset, size: int) -> tuple[Tensor, Tensor]:
    """The fixed probe batch: ``size`` training examples chosen by a constant seed."""
    n = data.x_train.shape[0]
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(PROBE_SEED))[: min(size, n)]
    return data.x_train[idx], data.y_train[idx]


def _losses(out: Tensor, y: Tensor, classification: bool) -> Tensor:
    """Per-member mean loss (M,) of outputs (M, P, out) against the shared targets y."""
    members, batch = out.shape[0], out.shape[1]
    if classification:
        target = y.unsqueeze(0).expand(members, batch).reshape(-1)
        ce = F.cross_entropy(out.reshape(members * batch, -1), target, reduction="none")
        return ce.view(members, batch).mean(dim=1)
    return (out - y.unsqueeze(0)).square().mean(dim=(1, 2))


@dataclass
class _Curve:
    steps: list[int] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, step: int, metrics: dict[str, float]) -> None:
        index = len(self.steps)
        self.steps.append(step)
        for name, value in metrics.items():
            # A name first seen late is padded with NaN so every list aligns with `steps`.
            self.values.setdefault(name, [math.nan] * index).append(value)
        for values in self.values.values():
            if len(values) < len(self.steps):
                values.append(math.nan)


class CohortDiagnostics:
    """The ``on_eval`` hook of `train_cohort`: measures every active member at every
    ``config.every``-th evaluation point and keeps one curve per original member."""

    def __init__(
        self,
        config: DiagnosticsConfig,
        data: Dataset,
        lrs: Sequence[float],
        device: str | torch.device = "cpu",
    ) -> None:
        self.config = config
        self.classification = data.task == "classification"
        x, y = probe_batch(data, config.probe_size)
        self.x = x.to(device)
        self.y = y.to(device)
        self.lrs = torch.tensor(list(lrs), dtype=torch.float32, device=device)
        self.curves = [_Curve() for _ in lrs]
        self._calls = 0

    def __call__(self, step: int, model: CohortMLP, active: Sequence[int]) -> None:
        # Points 1, 1 + every, 1 + 2 every, ...: the first evaluation point always counts, so a
        # run that converges (or diverges) at its first evaluation still has a measurement.
        self._calls += 1
        if (self._calls - 1) % self.config.every:
            return
        if model.mixed:
            # Per-layer measurements of identity layers would be meaningless.
            raise ValueError("diagnostics need a cohort of one depth (no identity layers)")
        metrics = self.measure(model, list(active))
        for j, original in enumerate(active):
            self.curves[original].add(step, {k: float(v[j]) for k, v in metrics.items()})

    def measure(self, model: CohortMLP, active: list[int]) -> dict[str, Tensor]:
        """Every diagnostic for the members now in ``model``: name -> (M,) tensor."""
        members = model.members
        x = self.x.unsqueeze(0).expand(members, -1, -1)  # (M, P, in)
        lr = self.lrs[torch.tensor(active, dtype=torch.long, device=self.lrs.device)]
        names = [name for name, _ in model.named_parameters()]
        params = list(model.parameters())
        out: dict[str, Tensor] = {}

        # One forward keeping every layer's pre-activation (M, P, H).
        pre: list[Tensor] = []
        h = x
        last = len(model.weights) - 1
        for i, (weight, bias) in enumerate(zip(model.weights, model.biases, strict=True)):
            h = torch.baddbmm(bias, h, weight)
            if i < last:
                pre.append(h)
                h = model.activations[i](h)
        losses = _losses(h, self.y, self.classification)
        grads = torch.autograd.grad(losses.sum(), params, allow_unused=True)
        grads = tuple(
            torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)
        )

        with torch.no_grad():
            n_units = 0
            dead = torch.zeros(members, device=x.device)
            saturated = torch.zeros(members, device=x.device)
            shifts = []
            # Every layer's activation derivative from one autograd call (M, P, H) per layer.
            zs = [z.detach().requires_grad_(True) for z in pre]
            with torch.enable_grad():
                acts = [model.activations[k](z) for k, z in enumerate(zs)]
                derivs = torch.autograd.grad(sum(a.sum() for a in acts), zs)
            for k, (act, deriv) in enumerate(zip(acts, derivs, strict=True), start=1):
                unit_mean = act.detach().mean(dim=1)  # (M, H)
                # the median over units (the middle pair's mean when H is even)
                median = unit_mean.quantile(0.5, dim=1)  # (M,)
                out[f"mean_act/l{k}"] = median
                shifts.append(median.abs())
                is_dead = (deriv == 0).all(dim=1)  # (M, H)
                # "most examples": more than half; counted on booleans (no float copies)
                low = (deriv.abs() < SATURATION_THRESHOLD).sum(dim=1) * 2 > deriv.shape[1]
                dead += is_dead.sum(dim=1)
                saturated += (low & ~is_dead).sum(dim=1)
                n_units += deriv.shape[-1]
            out["bias_shift"] = torch.stack(shifts).mean(dim=0)
            out["dead_fraction"] = dead / n_units
            out["saturated_fraction"] = saturated / n_units

            weight_grads = [grads[names.index(f"weights.{i}")] for i in range(last + 1)]
            norms = [g.flatten(1).norm(dim=1) for g in weight_grads]
            for k, norm in enumerate(norms, start=1):
                out[f"grad_norm/l{k}"] = norm
            out["grad_ratio"] = norms[0] / norms[-1]

        # Look-ahead: the probe gradient after one plain step at each member's own lr.
        lr_b = lr.view(-1, 1, 1)
        ahead = {
            name: (p.detach() - lr_b * g).requires_grad_(True)
            for name, p, g in zip(names, params, grads, strict=True)
        }
        out_ahead = torch.func.functional_call(model, ahead, (x,))
        grads_ahead = torch.autograd.grad(
            _losses(out_ahead, self.y, self.classification).sum(),
            list(ahead.values()),
            allow_unused=True,
        )
        with torch.no_grad():
            flat = torch.cat([g.flatten(1) for g in grads], dim=1)
            flat_ahead = torch.cat(
                [
                    torch.zeros_like(g).flatten(1) if ga is None else ga.flatten(1)
                    for g, ga in zip(grads, grads_ahead, strict=True)
                ],
                dim=1,
            )
            out["grad_cosine"] = F.cosine_similarity(flat, flat_ahead, dim=1, eps=1e-30)

        if self.config.sharpness:
            top = cohort_sharpness(
                model, self.x, self.y, self.classification, iters=self.config.sharpness_iters
            )
            out["sharpness"] = top
            out["sharpness_lr"] = top * lr / 2.0
        return {k: v.detach().double().cpu() for k, v in out.items()}

    def curve(self, member: int) -> dict[str, object]:
        """Plain data for one member: {"steps": [...], "values": {name: [...]}}."""
        c = self.curves[member]
        return {"steps": list(c.steps), "values": {k: list(v) for k, v in c.values.items()}}

    def summary(self, member: int) -> dict[str, float]:
        """Early-training mean of each scalar diagnostic (see the module docstring)."""
        return summarize_curve(self.curves[member].values)


def summarize_curve(values: dict[str, list[float]]) -> dict[str, float]:
    """Mean over the first `EARLY_POINTS` finite values of each scalar; ``grad_ratio`` is
    averaged as log10 (ratios multiply) and reported as ``grad_ratio_log10``."""
    out: dict[str, float] = {}
    for name in SCALARS:
        series = values.get(name)
        if not series:
            continue
        early = series[:EARLY_POINTS]
        if name == "grad_ratio":
            logs = [math.log10(v) for v in early if math.isfinite(v) and v > 0]
            if logs:
                out["grad_ratio_log10"] = sum(logs) / len(logs)
            continue
        finite = [v for v in early if math.isfinite(v)]
        if finite:
            out[name] = sum(finite) / len(finite)
    return out
