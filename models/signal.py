"""Signal propagation at initialisation: per-layer statistics of a deep MLP's forward pass,
the measurement behind two classic, quantitative results this product reproduces
(tests/models/test_classic_results.py, examples/classic_results.py):

- He et al. 2015, "Delving Deep into Rectifiers", Sec. 2.2: in a ReLU net the second moment of
  the pre-activations changes by a factor n Var[w] / 2 per layer, so it is preserved iff
  Var[w] = 2 / n (He init) and halves every layer with Var[w] = 1 / n (LeCun / Xavier with
  equal fans), "diminishing ... by 2^-L" over L layers.
- Klambauer et al. 2017, "Self-Normalizing Neural Networks", Theorem 1: with SELU and weights of
  mean 0 and variance 1 / n (LeCun normal), the activations' (mean, variance) map has a stable
  fixed point at (0, 1): activations converge to mean 0 and variance 1 with depth. PyTorch's
  ``calculate_gain('selu') = 3/4`` gives variance 0.5625 / n, and the variance then decays.

Pure: weights come from `models.initializers.init_layer` with an explicit generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from models.activations import get_activation
from models.initializers import init_layer

__all__ = ["LayerStats", "propagate"]


@dataclass(frozen=True)
class LayerStats:
    """Statistics of one hidden layer over all units and examples."""

    pre_second_moment: float
    """E[z^2] of the pre-activations z = W x + b (He et al.'s quantity)."""
    post_mean: float
    """Mean of the activations (Klambauer et al.'s mu)."""
    post_var: float
    """Variance of the activations (Klambauer et al.'s nu)."""


@torch.no_grad()
def propagate(
    x: Tensor,
    *,
    activation: str,
    init: str,
    depth: int,
    width: int,
    seed: int = 0,
    gain: float | None = None,
) -> list[LayerStats]:
    """Per hidden layer statistics of a fresh ``depth``-layer MLP applied to ``x`` (B, in).

    ``gain`` overrides the activation's registry gain (for gain-using schemes such as
    kaiming_normal), e.g. 0.75 for PyTorch's SELU gain.
    """
    info = get_activation(activation)
    act = info.factory(1)
    generator = torch.Generator().manual_seed(seed)
    h = x.double()
    out = []
    fan_in = x.shape[1]
    for _ in range(depth):
        weight = torch.empty(width, fan_in)
        bias = torch.empty(width)
        init_layer(weight, bias, init, info.gain if gain is None else gain, generator)
        z = h @ weight.double().T + bias.double()
        h = act(z)
        out.append(
            LayerStats(
                pre_second_moment=float(z.square().mean()),
                post_mean=float(h.mean()),
                post_var=float(h.var()),
            )
        )
        fan_in = width
    return out
