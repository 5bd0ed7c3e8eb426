"""Classic, quantitative results about initialisation in deep MLPs, reproduced at small scale.

1. He, Zhang, Ren & Sun 2015, "Delving Deep into Rectifiers: Surpassing Human-Level
   Performance on ImageNet Classification" (ICCV), Sec. 2.2, eq. (10)-(11): in a ReLU network
   Var[y_L] = Var[y_1] prod_l (n_l Var[w_l] / 2), so the signal is preserved iff
   Var[w] = 2 / n (He init) and shrinks by 1/2 per layer with Var[w] = 1 / n (Xavier with equal
   fans, LeCun normal). Their Fig. 3: a 30-layer ReLU net trains from He init and stalls from
   Xavier init.
2. Klambauer, Unterthiner, Mayr & Hochreiter 2017, "Self-Normalizing Neural Networks"
   (NeurIPS), Theorem 1: SELU with weights of mean 0 and variance 1 / n (LeCun normal) maps
   the activations' (mean, variance) to a stable fixed point (0, 1). With PyTorch's
   calculate_gain('selu') = 3/4 the weight variance is 0.5625 / n and the fixed point is lost.
"""

from __future__ import annotations

import math

import pytest
import torch

from models import CohortSpec, Convergence, Member, load_dataset, train_cohort
from models.signal import propagate

WIDTH = 256
SEEDS = (0, 1, 2)


def _inputs(mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(123)
    return torch.randn(2000, WIDTH, generator=g) * std + mean


def _per_layer_factor(init: str, depth: int = 20) -> float:
    """Geometric-mean change of E[z^2] per layer (layers 2..depth), averaged over seeds."""
    factors = []
    for seed in SEEDS:
        q = [
            s.pre_second_moment
            for s in propagate(
                _inputs(), activation="relu", init=init, depth=depth, width=WIDTH, seed=seed
            )
        ]
        factors.append((q[-1] / q[0]) ** (1.0 / (depth - 1)))
    return sum(factors) / len(factors)


def test_he_2015_relu_signal_is_preserved_by_he_init_and_halved_by_xavier() -> None:
    # Published factor per layer: n Var[w] / 2 = 1 (He) and 1/2 (Var[w] = 1/n). Measured
    # (width 256, 20 layers, 3 seeds): 0.98 and 0.49.
    assert _per_layer_factor("kaiming_normal") == pytest.approx(1.0, abs=0.05)
    assert _per_layer_factor("xavier_normal") == pytest.approx(0.5, abs=0.025)
    assert _per_layer_factor("lecun_normal") == pytest.approx(0.5, abs=0.025)


@pytest.mark.slow
def test_he_2015_thirty_layer_relu_net_trains_from_he_init_and_stalls_from_xavier() -> None:
    # He et al. Fig. 3 at small scale: 30 ReLU layers of width 64 on digits, same lr and paired
    # seeds. From Xavier init the loss stays at chance (ln 10 = 2.303); from He init it learns.
    conv = Convergence(target_loss=0.5, max_steps=600, eval_every=25)
    members = tuple(
        Member(init, 0.01, seed) for init in ("kaiming_normal", "xavier_normal") for seed in SEEDS
    )
    spec = CohortSpec("relu", 30, 64, "momentum", batch_size=64, members=members)
    results = train_cohort(load_dataset("digits"), spec, conv)
    he, xavier = results[:3], results[3:]
    assert all(r.summary.best_loss < 1.5 for r in he), [r.summary.best_loss for r in he]
    assert all(r.summary.best_loss > math.log(10) - 0.01 for r in xavier)


def _selu_tail(init: str, gain: float | None = None) -> tuple[float, float]:
    """Mean and variance of SELU activations over layers 17..32, averaged over seeds, from
    inputs off the fixed point (mean 0.1, variance 1.44: inside Theorem 1's domain)."""
    means, variances = [], []
    for seed in SEEDS:
        stats = propagate(
            _inputs(0.1, 1.2),
            activation="selu",
            init=init,
            depth=32,
            width=WIDTH,
            seed=seed,
            gain=gain,
        )
        tail = stats[16:]
        means.append(sum(s.post_mean for s in tail) / len(tail))
        variances.append(sum(s.post_var for s in tail) / len(tail))
    return sum(means) / len(means), sum(variances) / len(variances)


def test_klambauer_2017_selu_with_lecun_init_self_normalises_to_mean_0_variance_1() -> None:
    mean, var = _selu_tail("lecun_normal")
    assert abs(mean) < 0.03  # measured ~0.00
    assert var == pytest.approx(1.0, abs=0.05)  # measured ~0.99
    # PyTorch's 3/4 SELU gain: the variance collapses towards 0 instead (measured ~0.06).
    _, var_34 = _selu_tail("kaiming_normal", gain=0.75)
    assert var_34 < 0.2
