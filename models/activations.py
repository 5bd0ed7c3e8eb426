"""The activation registry: every activation the search can choose, with the facts about it
that the rest of the package needs (module factory, initialisation gain, default initializer,
smoothness, centring).

Every module returned by a factory works elementwise on cohort tensors shaped (M, B, H) -- M
cohort members, B examples, H units -- and, for M == 1, also on plain (B, H) tensors, so the same
registry serves the batched cohort model and the plain `nn.Sequential` reference model.

Gains (the ``gain`` field, used by `kaiming_*` and `orthogonal` initialisation):

============  ==========================  ===================================================
activation    gain                        why
============  ==========================  ===================================================
relu family   sqrt(2)                     He et al. 2015: half the inputs are zeroed. Used for
                                          relu, prelu, srelu, elu, celu, gelu, silu, mish,
                                          softplus, hardswish (all ReLU-like for x > 0).
leaky_relu    sqrt(2 / (1 + 0.01**2))     He et al. with negative slope 0.01.
tanh          5/3                         PyTorch / Saxe et al.'s tanh gain.
selu          1.0                         LeCun normal keeps SELU self-normalising. PyTorch's
                                          ``calculate_gain('selu') = 3/4`` is tuned for a
                                          different goal and breaks self-normalisation.
sigmoid,      1.0                         Near-linear around 0 (or linear): no correction.
softsign,
hardtanh,
identity
============  ==========================  ===================================================

``smooth`` means C^1 on the whole real line (continuous first derivative everywhere). The brief
that introduced this field said "C^1 at 0", but that reading would call srelu (kink at -1),
hardtanh (kinks at +-1) and hardswish (kinks at +-3) smooth, which is not the distinction the
field exists for (kinked versus smooth gradient flow). Notable decisions: elu and celu with
alpha = 1 are C^1 (both one-sided derivatives at 0 are 1); selu is NOT (derivative jumps from
scale * alpha ~= 1.758 to scale ~= 1.051 at 0); softsign is C^1 (derivative 1 / (1 + |x|)^2 is
continuous; only its second derivative jumps).

``centred`` means the activation takes negative values, so a unit's output mean can be brought
to zero by shifting its pre-activations: it does not have to rely on dying to stop biasing the
next layer. relu, softplus and sigmoid are never negative (not centred). The strength varies a
lot; the pre-activation shift mu at which the output mean over N(mu, 1) inputs reaches zero, and
the unit's output std there, measure it:

======================================  =====  ==========  ================================
activation                              mu     output std  note
======================================  =====  ==========  ================================
selu, tanh, hardtanh, softsign,         0      0.43-1.0    odd or self-normalising
identity
srelu                                   -0.11  0.84        floor at -1
elu, celu                               -0.22  0.73        saturate at -1
hardswish                               -0.38  0.44        negative lobe down to -0.375
silu                                    -0.50  0.41        negative lobe down to -0.28
mish                                    -0.52  0.45        negative lobe down to -0.31
prelu                                   -0.55  0.51        slope 0.25 at init
gelu                                    -0.87  0.29        negative lobe down to -0.17
leaky_relu                              -1.73  0.11        slope 0.01
======================================  =====  ==========  ================================

So GELU, SiLU, Mish and Hardswish count as centred (their small negative lobe is enough), while
leaky_relu is centred only nominally: with slope 0.01 a unit must be mostly off to centre itself.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from models.registry import lookup

__all__ = ["ACTIVATIONS", "ActivationInfo", "CohortPReLU", "SReLU", "get_activation"]


@dataclass(frozen=True)
class ActivationInfo:
    """What the package knows about one activation."""

    factory: Callable[[int], nn.Module]
    """members -> a module applied elementwise to (M, B, H) tensors (also (B, H) when M == 1)."""
    gain: float
    """The He / orthogonal gain for this activation (see the module docstring's table)."""
    auto_init: str
    """The initializer name that `auto` resolves to for this activation."""
    smooth: bool
    """C^1 on the whole real line (see the module docstring)."""
    centred: bool
    """Takes negative values, so unit means can be zero (see the module docstring)."""
    description: str


class SReLU(nn.Module):
    """Shifted ReLU, ``max(x, -1)``: the control of the ELU paper (Clevert et al. 2016).

    Kinked like ReLU, but with a negative floor so unit means can be near zero like ELU: it
    separates the effect of centring from the effect of smoothness.
    """

    def forward(self, x: Tensor) -> Tensor:
        return torch.clamp(x, min=-1.0)


class CohortPReLU(nn.Module):
    """PReLU with one learnable negative slope per cohort member, shape (M, 1, 1), init 0.25.

    ``nn.PReLU`` puts its per-channel slopes on dimension 1, which in a cohort tensor (M, B, H)
    is the batch; here the slope belongs to the member (dimension 0) so members stay independent
    and `CohortMLP.select` can index it like every other parameter.
    """

    def __init__(self, members: int, init: float = 0.25) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((members, 1, 1), init))

    def forward(self, x: Tensor) -> Tensor:
        slope: Tensor
        if x.dim() == 3:
            slope = self.weight  # (M, 1, 1) broadcasts over (M, B, H)
        elif self.weight.shape[0] == 1:
            slope = self.weight.reshape(1)  # a plain single model: one slope for (B, H)
        else:
            raise ValueError(
                f"CohortPReLU with {self.weight.shape[0]} members needs (M, B, H) input, "
                f"got shape {tuple(x.shape)}"
            )
        return torch.where(x >= 0, x, slope * x)


def _stateless(module_cls: type[nn.Module], members: int, **kwargs: Any) -> nn.Module:
    # Parameter-free activations are identical for every member, so `members` is unused; a
    # functools.partial over this top-level function (unlike a lambda) keeps ActivationInfo
    # picklable.
    del members
    return module_cls(**kwargs)


def _elementwise(module_cls: type[nn.Module], **kwargs: Any) -> Callable[[int], nn.Module]:
    return functools.partial(_stateless, module_cls, **kwargs)


_HE = math.sqrt(2.0)
LEAKY_SLOPE = 0.01

ACTIVATIONS: dict[str, ActivationInfo] = {
    "relu": ActivationInfo(
        _elementwise(nn.ReLU),
        _HE,
        "kaiming_normal",
        smooth=False,
        centred=False,
        description="max(x, 0): kinked at 0, outputs never negative.",
    ),
    "leaky_relu": ActivationInfo(
        _elementwise(nn.LeakyReLU, negative_slope=LEAKY_SLOPE),
        math.sqrt(2.0 / (1.0 + LEAKY_SLOPE**2)),
        "kaiming_normal",
        smooth=False,
        centred=True,
        description="max(x, 0.01 x): ReLU with a small negative slope; kinked at 0.",
    ),
    "prelu": ActivationInfo(
        CohortPReLU,
        _HE,
        "kaiming_normal",
        smooth=False,
        centred=True,
        description="Leaky ReLU with a learnable slope per member (init 0.25); kinked at 0.",
    ),
    "srelu": ActivationInfo(
        _elementwise(SReLU),
        _HE,
        "kaiming_normal",
        smooth=False,
        centred=True,
        description="max(x, -1): the ELU paper's shifted-ReLU control, kinked at -1 but centred.",
    ),
    "elu": ActivationInfo(
        _elementwise(nn.ELU, alpha=1.0),
        _HE,
        "kaiming_normal",
        smooth=True,
        centred=True,
        description="x if x > 0 else exp(x) - 1 (alpha 1): C^1, saturates at -1.",
    ),
    "selu": ActivationInfo(
        _elementwise(nn.SELU),
        1.0,
        "lecun_normal",
        smooth=False,
        centred=True,
        description="Scaled ELU (Klambauer et al. 2017), self-normalising under LeCun normal "
        "init; its derivative jumps at 0 (1.758 -> 1.051), so not C^1.",
    ),
    "celu": ActivationInfo(
        _elementwise(nn.CELU, alpha=1.0),
        _HE,
        "kaiming_normal",
        smooth=True,
        centred=True,
        description="Continuously differentiable ELU (alpha 1, where it equals elu).",
    ),
    "gelu": ActivationInfo(
        _elementwise(nn.GELU),
        _HE,
        "kaiming_normal",
        smooth=True,
        centred=True,
        description="x * Phi(x) (exact erf form): smooth, negative lobe down to -0.17.",
    ),
    "silu": ActivationInfo(
        _elementwise(nn.SiLU),
        _HE,
        "kaiming_normal",
        smooth=True,
        centred=True,
        description="x * sigmoid(x) (swish): smooth, negative lobe down to -0.28.",
    ),
    "mish": ActivationInfo(
        _elementwise(nn.Mish),
        _HE,
        "kaiming_normal",
        smooth=True,
        centred=True,
        description="x * tanh(softplus(x)): smooth, negative lobe down to -0.31.",
    ),
    "softplus": ActivationInfo(
        _elementwise(nn.Softplus),
        _HE,
        "kaiming_normal",
        smooth=True,
        centred=False,
        description="ln(1 + e^x): smooth ReLU, always positive.",
    ),
    "tanh": ActivationInfo(
        _elementwise(nn.Tanh),
        5.0 / 3.0,
        "xavier_normal",
        smooth=True,
        centred=True,
        description="tanh(x): smooth, odd, saturating at +-1.",
    ),
    "sigmoid": ActivationInfo(
        _elementwise(nn.Sigmoid),
        1.0,
        "xavier_normal",
        smooth=True,
        centred=False,
        description="1 / (1 + e^-x): smooth, outputs in (0, 1), mean 0.5 at 0.",
    ),
    "hardtanh": ActivationInfo(
        _elementwise(nn.Hardtanh),
        1.0,
        "xavier_normal",
        smooth=False,
        centred=True,
        description="clamp(x, -1, 1): linear around 0, kinked at +-1.",
    ),
    "hardswish": ActivationInfo(
        _elementwise(nn.Hardswish),
        _HE,
        "kaiming_normal",
        smooth=False,
        centred=True,
        description="x * relu6(x + 3) / 6: piecewise quadratic, kinked at +-3, negative lobe "
        "down to -0.375.",
    ),
    "softsign": ActivationInfo(
        _elementwise(nn.Softsign),
        1.0,
        "xavier_normal",
        smooth=True,
        centred=True,
        description="x / (1 + |x|): odd, saturating polynomially; C^1 (second derivative jumps).",
    ),
    "identity": ActivationInfo(
        _elementwise(nn.Identity),
        1.0,
        "lecun_normal",
        smooth=True,
        centred=True,
        description="x: the linear baseline (the network is then a linear model).",
    ),
}


def get_activation(name: str) -> ActivationInfo:
    """The registry entry for ``name`` (case- and whitespace-insensitive).

    Raises:
        UnknownNameError: listing the valid activation names.
    """
    return lookup(ACTIVATIONS, name, "activation")
