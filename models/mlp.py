"""The MLP models: a batched cohort of M independent MLPs, and the plain single-model reference.

A cohort holds one weight tensor per layer with the member as the leading dimension and runs
every member with one `torch.baddbmm` per layer, because tiny MLPs are bound by per-op overhead:
M members cost about as much as one. Members never interact: member m's outputs and gradients
depend only on member m's parameters and inputs.

Mixed depths: a cohort can hold members of different depths (``depths[m] <= shape.depth``).
Member m's hidden layers ``depths[m]..shape.depth-1`` are identity layers: the forward pass
keeps the layer's input for that member (a select, not arithmetic), so member m computes
exactly its own depth-``depths[m]`` network, forward and backward, and the identity layers'
parameters (initialised to I and 0) get exactly zero gradient and never change.
That lets a search batch configurations of different depths without changing any result.

Determinism contract: member m's initial weights depend only on (shape, inits[m], seeds[m]). They
come from ``torch.Generator().manual_seed(seeds[m])``, drawn layer by layer from the input
layer to the output layer (weight, then bias where the scheme draws one). `build_mlp` draws the
same numbers in the same order, so it is exactly member m as a plain ``nn.Sequential``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from models.activations import get_activation
from models.initializers import init_layer, resolve_init

__all__ = ["MAX_DEPTH", "CohortMLP", "MLPShape", "build_cohort", "build_mlp"]

MAX_DEPTH = 64


@dataclass(frozen=True)
class MLPShape:
    """The architecture shared by every member of a cohort."""

    in_features: int
    out_features: int
    width: int
    """Units per hidden layer."""
    depth: int
    """Number of hidden layers (1..64); the model has depth + 1 Linear layers."""
    activation: str
    """An `ACTIVATIONS` key; stored normalised (lower case)."""

    def __post_init__(self) -> None:
        for field in ("in_features", "out_features", "width"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)}")
        if not 1 <= self.depth <= MAX_DEPTH:
            raise ValueError(f"depth must be in 1..{MAX_DEPTH}, got {self.depth}")
        get_activation(self.activation)  # fail at construction, not at the first forward
        object.__setattr__(self, "activation", self.activation.strip().lower())

    @property
    def layer_sizes(self) -> list[tuple[int, int]]:
        """(fan_in, fan_out) of every Linear layer, input to output."""
        dims = [self.in_features] + [self.width] * self.depth + [self.out_features]
        return list(zip(dims[:-1], dims[1:], strict=True))


class CohortMLP(nn.Module):
    """M independent MLPs of one shape, evaluated together.

    Parameters (for layer i with fan_in -> fan_out): ``weights[i]`` (M, fan_in, fan_out) -- the
    transpose of nn.Linear's layout, so that ``baddbmm(bias, x, weight)`` needs no transpose --
    and ``biases[i]`` (M, 1, fan_out). Activations with parameters (prelu) hold them with the
    member as leading dimension too, so `select` can treat every parameter alike.

    The constructor allocates zeros; use `build_cohort` for initialised cohorts.
    """

    def __init__(self, shape: MLPShape, members: int, depths: Sequence[int] | None = None) -> None:
        super().__init__()
        if members < 1:
            raise ValueError(f"a cohort needs at least one member, got {members}")
        depths = list(depths) if depths is not None else [shape.depth] * members
        if len(depths) != members or not all(1 <= d <= shape.depth for d in depths):
            raise ValueError(
                f"depths must be {members} values in 1..{shape.depth} (the cohort's depth), "
                f"got {depths}"
            )
        self.shape = shape
        self.members = members
        self.depths: Tensor
        self.register_buffer("depths", torch.tensor(depths, dtype=torch.long), persistent=False)
        self.weights = nn.ParameterList(
            nn.Parameter(torch.zeros(members, fan_in, fan_out))
            for fan_in, fan_out in shape.layer_sizes
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.zeros(members, 1, fan_out)) for _, fan_out in shape.layer_sizes
        )
        factory = get_activation(shape.activation).factory
        # One module per hidden layer: a learnable activation gets its own parameters per layer,
        # like nn.PReLU instances in a plain Sequential.
        self.activations = nn.ModuleList(factory(members) for _ in range(shape.depth))
        self._update_masks()

    @property
    def mixed(self) -> bool:
        """Whether some member is shallower than the cohort (has identity layers)."""
        return any(mask is not None for mask in self._masks)

    def layer_masks(self) -> list[Tensor | None]:
        """Per hidden layer i: (M, 1, 1) True where layer i is real for the member; None when it
        is real for every member."""
        return list(self._masks)

    def _update_masks(self) -> None:
        # Computed when the membership changes, never per step (each would be a device sync).
        self._masks: list[Tensor | None] = []
        for i in range(self.shape.depth):
            real = self.depths > i
            self._masks.append(None if bool(real.all()) else real.view(-1, 1, 1))
        # Members ordered deepest first (as train_cohort builds them): layer i is real for
        # exactly the first _real[i] members, so it is computed for those only and the rest
        # pass through by concatenation -- no wasted arithmetic. Parametric activations
        # (per-member parameters) and other orders use the select path.
        depths = self.depths.tolist()
        sliceable = depths == sorted(depths, reverse=True) and (
            next(self.activations.parameters(), None) is None
        )
        self._real: list[int] | None = (
            [sum(d > i for d in depths) for i in range(self.shape.depth)] if sliceable else None
        )

    @property
    def computed_members(self) -> list[int] | None:
        """Per hidden layer i: how many leading members compute it (the rest pass their input
        through); None when the layer selects per member instead (parametric activations,
        members not ordered deepest first)."""
        return None if self._real is None else list(self._real)

    def _apply(self, fn: Any, recurse: bool = True) -> CohortMLP:
        # .to(device) moves the buffers; the cached masks follow them.
        out = super()._apply(fn, recurse)
        self._update_masks()
        return out

    def forward(self, x: Tensor) -> Tensor:
        """(M, B, in_features) -> (M, B, out_features)."""
        h = x
        last = len(self.weights) - 1
        members = h.shape[0]
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            if i == last:
                return torch.baddbmm(bias, h, weight)
            mask = self._masks[i]
            if mask is None:
                h = self.activations[i](torch.baddbmm(bias, h, weight))
            elif self._real is not None:
                # An identity layer passes its input through untouched; its parameters are
                # not used, so they get exactly zero gradient and never change.
                k = self._real[i]
                a = self.activations[i](torch.baddbmm(bias[:k], h[:k], weight[:k]))
                h = torch.cat([a, h[k:members]])
            else:
                a = self.activations[i](torch.baddbmm(bias, h, weight))
                h = torch.where(mask, a, h)
        return h

    def select(self, keep: Tensor) -> None:
        """Keep only the members at positions ``keep`` (1-D int64), in that order.

        Every parameter is replaced by a new leaf Parameter (``index_select`` on dimension 0),
        so optimizer state held elsewhere must be compacted with the same indices.
        """
        keep = keep.to(device=self.weights[0].device, dtype=torch.long)
        if keep.dim() != 1 or keep.numel() == 0:
            raise ValueError(f"keep must be a non-empty 1-D index tensor, got {tuple(keep.shape)}")
        for module in self.modules():
            for name, param in list(module.named_parameters(recurse=False)):
                # Re-assigning an existing name keeps the parameter's position in the module, so
                # list(self.parameters()) keeps its order across select() calls.
                setattr(
                    module,
                    name,
                    nn.Parameter(
                        param.detach().index_select(0, keep), requires_grad=param.requires_grad
                    ),
                )
        self.depths = self.depths.index_select(0, keep)
        self.members = int(keep.numel())
        self._update_masks()


def _check_members(inits: Sequence[str], seeds: Sequence[int]) -> None:
    if len(inits) != len(seeds):
        raise ValueError(f"{len(inits)} inits but {len(seeds)} seeds")
    if not inits:
        raise ValueError("a cohort needs at least one member")


def _init_member(shape: MLPShape, init: str, seed: int) -> list[tuple[Tensor, Tensor]]:
    """Member weights in nn.Linear layout: [(weight (fan_out, fan_in), bias (fan_out,)), ...]."""
    concrete = resolve_init(init, shape.activation)
    hidden_gain = get_activation(shape.activation).gain
    generator = torch.Generator().manual_seed(seed)
    layers = []
    sizes = shape.layer_sizes
    for i, (fan_in, fan_out) in enumerate(sizes):
        weight = torch.empty(fan_out, fan_in)
        bias = torch.empty(fan_out)
        # The output layer feeds no activation, so it gets gain 1 under the same scheme.
        gain = hidden_gain if i < len(sizes) - 1 else 1.0
        init_layer(weight, bias, concrete, gain, generator)
        layers.append((weight, bias))
    return layers


def build_cohort(
    shape: MLPShape,
    inits: Sequence[str],
    seeds: Sequence[int],
    depths: Sequence[int] | None = None,
) -> CohortMLP:
    """A CPU cohort whose member m is initialised with ``inits[m]`` from ``seeds[m]``.

    ``inits`` may contain ``auto``. ``depths`` (default: all ``shape.depth``) gives each
    member's own depth; shallower members get identity layers after their hidden layers, and
    their weights are drawn exactly as for a network of their own depth.
    """
    _check_members(inits, seeds)
    depths = list(depths) if depths is not None else [shape.depth] * len(inits)
    if depths and max(depths) < shape.depth:
        raise ValueError(f"the deepest member must have the cohort's depth {shape.depth}")
    model = CohortMLP(shape, len(inits), depths)
    last = shape.depth  # index of the output layer
    with torch.no_grad():
        for m, (init, seed, depth) in enumerate(zip(inits, seeds, depths, strict=True)):
            own = dataclasses.replace(shape, depth=depth)
            layers = _init_member(own, init, seed)
            for i, (weight, bias) in enumerate(layers[:-1]):
                model.weights[i][m].copy_(weight.T)
                model.biases[i][m, 0].copy_(bias)
            for i in range(depth, last):
                model.weights[i][m].copy_(torch.eye(shape.width))
                model.biases[i][m].zero_()
            weight, bias = layers[-1]
            model.weights[last][m].copy_(weight.T)
            model.biases[last][m, 0].copy_(bias)
    return model


def build_mlp(shape: MLPShape, init: str, seed: int) -> nn.Sequential:
    """A plain ``nn.Linear``/activation model equal to a cohort member with this init and seed.

    Input (B, in_features) -> (B, out_features).
    """
    factory = get_activation(shape.activation).factory
    modules: list[nn.Module] = []
    for i, (weight, bias) in enumerate(_init_member(shape, init, seed)):
        # Built on the meta device: nn.Linear's constructor would otherwise run its default init
        # and consume the global RNG, a silent side effect on the caller's random state.
        linear = nn.Linear(weight.shape[1], weight.shape[0], device="meta").to_empty(device="cpu")
        with torch.no_grad():
            linear.weight.copy_(weight)
            linear.bias.copy_(bias)
        modules.append(linear)
        if i < shape.depth:
            modules.append(factory(1))
    return nn.Sequential(*modules)
