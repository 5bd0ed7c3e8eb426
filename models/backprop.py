"""A cohort's training step without autograd: forward, cross-entropy and backward by hand.

For the common activations the gradient of a cohort step is a handful of batched matrix
products and one elementwise derivative per layer, all known in closed form. Writing them
out skips autograd's graph and bookkeeping, which on tiny MLPs is a large share of a step
(measured: about a fifth of the CPU per step of a cohort of 8 at width 64; see
bench/step_cost.py). The arithmetic is the autograd path's: the same kernels forward (the
model's own activation modules; ELU as max(z, exp(min(z, 0)) - 1), about twice as fast as
PyTorch's CPU kernel) and PyTorch's own derivative kernels backward
(``threshold_backward``, ``elu_backward``, ...), so results agree with it to float rounding
(tests/models/test_backprop.py), and a member's gradient still depends only on its own
parameters and minibatch.

Used by `models.train.train_cohort` for classification cohorts whose activation has an entry
in `DERIVATIVES` and whose layers are computed by slices (`CohortMLP.computed_members`);
everything else (regression, parametric activations, members not ordered deepest first)
takes the autograd path.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from models.mlp import CohortMLP

__all__ = ["DERIVATIVES", "FORWARDS", "cross_entropy_step", "supports"]

Derivative = Callable[[Tensor, Tensor, Tensor], Tensor]
"""(grad wrt the activation's output, its input z, its output a) -> grad wrt z."""

_aten = torch.ops.aten

DERIVATIVES: dict[str, Derivative] = {
    "relu": lambda g, z, a: _aten.threshold_backward(g, a, 0),
    "leaky_relu": lambda g, z, a: _aten.leaky_relu_backward(g, z, 0.01, False),
    "elu": lambda g, z, a: _aten.elu_backward(g, 1.0, 1, 1, True, a),
    "gelu": lambda g, z, a: _aten.gelu_backward(g, z),
    "silu": lambda g, z, a: _aten.silu_backward(g, z),
    "tanh": lambda g, z, a: _aten.tanh_backward(g, a),
    "sigmoid": lambda g, z, a: _aten.sigmoid_backward(g, a),
    "identity": lambda g, z, a: g,
}
"""Activations whose derivative the hand-written step knows; each must match the registry's
module exactly (``models.activations``: LeakyReLU slope 0.01, ELU alpha 1, exact GELU)."""


def _elu(z: Tensor) -> Tensor:
    # ELU(z) = max(z, exp(min(z, 0)) - 1), since exp(z) - 1 >= z: PyTorch's CPU ELU kernel
    # (expm1) is about 2x slower on these tensors than this exp, and the result differs from
    # it by at most one float32 rounding of 1 (6e-8).
    out = z.clamp(max=0.0).exp_().sub_(1.0)
    return torch.maximum(z, out, out=out)


FORWARDS: dict[str, Callable[[Tensor], Tensor]] = {"elu": _elu}
"""Faster forward kernels for activations whose registry module is slow on small CPU
tensors; the others run the model's own activation module."""


def supports(model: CohortMLP) -> bool:
    """Whether `cross_entropy_step` can train this model."""
    return model.shape.activation in DERIVATIVES and model.computed_members is not None


def cross_entropy_step(
    model: CohortMLP,
    x: Tensor,
    y: Tensor,
    fault: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Per-member mean cross-entropy (M,), accuracy (M,) and the gradients of the summed
    member losses, in ``model.parameters()`` order, for inputs (M, B, in) and labels (M, B).
    The gradient of hidden layer i covers its ``computed_members[i]`` leading members only:
    the other members' rows are identity layers, whose gradient is exactly zero.

    A member whose loss is not finite has diverged: its loss contributes no gradient (as the
    autograd path's zeroed loss), its own parameters may still get non-finite gradients from
    non-finite weights (0 x inf; so may they on the autograd path), and the others are
    untouched: training stops it at the next evaluation.
    ``fault`` (models.train.LossFault,
    a test seam) may replace the member losses before anything else sees them.
    """
    derivative = DERIVATIVES[model.shape.activation]
    forward = FORWARDS.get(model.shape.activation)
    counts = model.computed_members
    assert counts is not None
    weights, biases = list(model.weights), list(model.biases)
    last = len(weights) - 1
    with torch.no_grad():
        # Forward, keeping each hidden layer's input, pre-activation and output. Members are
        # deepest first, so layer i's k computing members are a prefix of layer i-1's: its
        # input is a prefix view of the previous output, never a copy.
        saved: list[tuple[Tensor, Tensor, Tensor, int]] = []
        h = x
        for i in range(last):
            k = counts[i]
            z = torch.baddbmm(biases[i][:k], h[:k], weights[i][:k])
            a = model.activations[i](z) if forward is None else forward(z)
            saved.append((h[:k], z, a, k))
            h = a
        # The output layer reads each member's last hidden layer: members of depth d are the
        # rows [counts[d], counts[d - 1]) of layer d - 1's output (one copy when depths mix).
        ends = [*counts[1:], 0]  # layer i's output rows from ends[i] on are final hidden states
        pieces = [a[ends[i] :] for i, (_, _, a, _) in enumerate(saved)]
        pieces = [piece for piece in reversed(pieces) if piece.shape[0]]
        h = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        assert h.shape[0] == x.shape[0], "every member computes the first hidden layer"
        out = torch.baddbmm(biases[last], h, weights[last])  # (M, B, C)

        # Loss over classes on dimension 1 (see models.train._member_losses).
        logp = torch.log_softmax(out.transpose(1, 2).contiguous(), dim=1)  # (M, C, B)
        target = y.unsqueeze(1)  # (M, 1, B)
        losses = logp.gather(1, target).squeeze(1).mean(dim=1).neg()
        if fault is not None:
            losses = fault(losses)
        accuracy = (out.argmax(dim=-1) == y).float().mean(dim=1)

        # d(sum of member means)/d logits = (softmax - one_hot) / B, zero for diverged members.
        grad = logp.exp_()
        grad.scatter_add_(1, target, torch.full(target.shape, -1.0, device=grad.device))
        grad.mul_(1.0 / y.shape[1])
        grad = torch.where(torch.isfinite(losses).view(-1, 1, 1), grad, 0.0)
        g = grad.transpose(1, 2)  # (M, B, C), a view

        grad_w: list[Tensor] = [torch.empty(0)] * len(weights)
        grad_b: list[Tensor] = [torch.empty(0)] * len(weights)
        grad_w[last] = torch.bmm(h.transpose(1, 2), g)
        grad_b[last] = g.sum(dim=1, keepdim=True)
        # The gradient wrt every member's last hidden output. Going down, layer i's rows
        # [0, k) of it are overwritten by the gradient wrt layer i's input (layer i-1's output
        # for those members), so at each layer its prefix is exactly that layer's output
        # gradient, with no copies: the members below the prefix got theirs from the output.
        up = torch.bmm(g, weights[last].transpose(1, 2))
        for i in range(last - 1, -1, -1):
            h_in, z, a, k = saved[i]
            gz = derivative(up[:k], z, a)
            # Shallower members' rows of this layer are identity and get exactly zero
            # gradient: the gradient covers the k computing members only (the optimizer
            # updates those rows; models.train._CohortOptimizer).
            grad_w[i] = torch.bmm(h_in.transpose(1, 2), gz)
            grad_b[i] = gz.sum(dim=1, keepdim=True)
            if i > 0:
                if gz.untyped_storage().data_ptr() == up.untyped_storage().data_ptr():
                    gz = gz.clone()  # a derivative that returned its input (identity)
                torch.bmm(gz, weights[i][:k].transpose(1, 2), out=up[:k])
    return losses, accuracy, grad_w + grad_b
