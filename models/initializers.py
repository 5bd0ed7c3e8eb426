"""The weight-initializer registry and the one function that initialises a Linear layer.

Every scheme draws from an explicit CPU `torch.Generator`, so a layer's initial weights depend
only on the generator's seed and the draws made before it -- never on global RNG state.
PyTorch's own `nn.Linear` default is available as ``torch_default`` but is never applied silently
(it hides a confound in activation comparisons: variance 1/(3 fan_in), no activation gain).

Weights are shaped (fan_out, fan_in) like ``nn.Linear.weight``; ``gain`` is the activation's gain
(`ActivationInfo.gain`) for hidden layers and 1.0 for the output layer.

===============  =============================================  ==============================
name             weight                                         bias
===============  =============================================  ==============================
kaiming_normal   N(0, std = gain / sqrt(fan_in))                 0
kaiming_uniform  U(-b, b), b = gain * sqrt(3 / fan_in)           0
xavier_normal    N(0, std = sqrt(2 / (fan_in + fan_out)))        0
                 (gain 1 whatever the activation, Glorot &
                 Bengio 2010 as published)
xavier_uniform   U(-b, b), b = sqrt(6 / (fan_in + fan_out))      0
orthogonal       gain * (semi-)orthogonal matrix (QR of a        0
                 Gaussian, Saxe et al. 2014)
lecun_normal     N(0, std = 1 / sqrt(fan_in))                    0
small_normal     N(0, std = 0.01)                                0
torch_default    nn.Linear's default: kaiming_uniform with       U(-1/sqrt(fan_in),
                 a = sqrt(5), i.e. U(-b, b), b = 1/sqrt(fan_in)    1/sqrt(fan_in))
auto             resolved per activation by `resolve_init` to
                 `ActivationInfo.auto_init` (He for the relu
                 family and leaky_relu, LeCun for selu and
                 identity, Glorot for tanh, sigmoid, softsign,
                 hardtanh)
===============  =============================================  ==============================

Draw order within a layer: the weight, then (torch_default only) the bias.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from models.activations import get_activation
from models.registry import lookup

__all__ = [
    "INITIALIZERS",
    "InitFn",
    "Initializer",
    "get_initializer",
    "init_layer",
    "resolve_init",
]


class InitFn(Protocol):
    """Fill ``weight`` (fan_out, fan_in) and ``bias`` (fan_out,) in place from ``generator``."""

    def __call__(
        self, weight: Tensor, bias: Tensor, gain: float, generator: torch.Generator
    ) -> None: ...


@dataclass(frozen=True)
class Initializer:
    """One registry entry."""

    draw: InitFn | None
    """The scheme; None only for ``auto``, which must be resolved per activation first."""
    uses_gain: bool
    """Whether the activation gain changes the scale (otherwise it is ignored)."""
    description: str


def _fans(weight: Tensor) -> tuple[int, int]:
    fan_out, fan_in = weight.shape
    return fan_in, fan_out


def _kaiming_normal(weight: Tensor, bias: Tensor, gain: float, generator: torch.Generator) -> None:
    fan_in, _ = _fans(weight)
    weight.normal_(0.0, gain / math.sqrt(fan_in), generator=generator)
    bias.zero_()


def _kaiming_uniform(weight: Tensor, bias: Tensor, gain: float, generator: torch.Generator) -> None:
    fan_in, _ = _fans(weight)
    bound = gain * math.sqrt(3.0 / fan_in)
    weight.uniform_(-bound, bound, generator=generator)
    bias.zero_()


def _xavier_normal(weight: Tensor, bias: Tensor, gain: float, generator: torch.Generator) -> None:
    del gain  # Glorot as published: the scale does not depend on the activation
    fan_in, fan_out = _fans(weight)
    weight.normal_(0.0, math.sqrt(2.0 / (fan_in + fan_out)), generator=generator)
    bias.zero_()


def _xavier_uniform(weight: Tensor, bias: Tensor, gain: float, generator: torch.Generator) -> None:
    del gain  # Glorot as published
    fan_in, fan_out = _fans(weight)
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    weight.uniform_(-bound, bound, generator=generator)
    bias.zero_()


def _orthogonal(weight: Tensor, bias: Tensor, gain: float, generator: torch.Generator) -> None:
    # nn.init.orthogonal_ takes a generator in torch >= 2.x and fixes the QR sign ambiguity,
    # so it is deterministic for a generator state.
    nn.init.orthogonal_(weight, gain=gain, generator=generator)
    bias.zero_()


def _lecun_normal(weight: Tensor, bias: Tensor, gain: float, generator: torch.Generator) -> None:
    del gain  # LeCun normal is the gain-1 Kaiming normal; SELU needs exactly this scale
    fan_in, _ = _fans(weight)
    weight.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=generator)
    bias.zero_()


SMALL_STD = 0.01


def _small_normal(weight: Tensor, bias: Tensor, gain: float, generator: torch.Generator) -> None:
    del gain  # a fixed small scale: the classic "too small" control for deep nets
    weight.normal_(0.0, SMALL_STD, generator=generator)
    bias.zero_()


def _torch_default(weight: Tensor, bias: Tensor, gain: float, generator: torch.Generator) -> None:
    del gain  # nn.Linear ignores the activation
    # Exactly nn.Linear.reset_parameters, but from our generator instead of the global RNG.
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5.0), generator=generator)
    fan_in, _ = _fans(weight)
    bound = 1.0 / math.sqrt(fan_in)
    bias.uniform_(-bound, bound, generator=generator)


INITIALIZERS: dict[str, Initializer] = {
    "kaiming_normal": Initializer(_kaiming_normal, True, "He normal, std gain/sqrt(fan_in)."),
    "kaiming_uniform": Initializer(
        _kaiming_uniform, True, "He uniform, bound gain*sqrt(3/fan_in)."
    ),
    "xavier_normal": Initializer(
        _xavier_normal, False, "Glorot normal, std sqrt(2/(fan_in+fan_out)), gain 1."
    ),
    "xavier_uniform": Initializer(
        _xavier_uniform, False, "Glorot uniform, bound sqrt(6/(fan_in+fan_out)), gain 1."
    ),
    "orthogonal": Initializer(_orthogonal, True, "Orthogonal matrix scaled by the gain."),
    "lecun_normal": Initializer(_lecun_normal, False, "LeCun normal, std 1/sqrt(fan_in)."),
    "small_normal": Initializer(_small_normal, False, "N(0, 0.01^2) whatever the shape."),
    "torch_default": Initializer(
        _torch_default, False, "nn.Linear's default (weight and bias U(+-1/sqrt(fan_in)))."
    ),
    "auto": Initializer(None, True, "The activation's recommended scheme (see resolve_init)."),
}


def get_initializer(name: str) -> Initializer:
    """The registry entry for ``name`` (case- and whitespace-insensitive).

    Raises:
        UnknownNameError: listing the valid initializer names.
    """
    return lookup(INITIALIZERS, name, "initializer")


def resolve_init(init: str, activation: str) -> str:
    """The concrete initializer name for ``init`` under ``activation``.

    ``auto`` becomes the activation's `auto_init`; any other name is validated and returned in
    canonical (lower-case) form. Both names are validated, so a bad activation fails here too.
    """
    info = get_activation(activation)
    get_initializer(init)
    canonical = init.strip().lower()
    return info.auto_init if canonical == "auto" else canonical


def init_layer(
    weight: Tensor, bias: Tensor, init: str, gain: float, generator: torch.Generator
) -> None:
    """Initialise one Linear layer in place.

    Args:
        weight: (fan_out, fan_in), like ``nn.Linear.weight``.
        bias: (fan_out,).
        init: a concrete initializer name (resolve ``auto`` with `resolve_init` first).
        gain: the activation gain; 1.0 for the output layer.
        generator: the CPU generator all draws come from.
    """
    entry = get_initializer(init)
    if entry.draw is None:
        raise ValueError("init 'auto' depends on the activation; resolve it with resolve_init()")
    if weight.dim() != 2 or bias.shape != (weight.shape[0],):
        raise ValueError(
            f"expected weight (fan_out, fan_in) and bias (fan_out,), got "
            f"{tuple(weight.shape)} and {tuple(bias.shape)}"
        )
    with torch.no_grad():
        entry.draw(weight, bias, gain, generator)
