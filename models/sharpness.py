"""Sharpness: the top algebraic eigenvalue of a training loss's Hessian, by the Lanczos method
on Hessian-vector products (double backward), never forming the Hessian.

Batched over cohort members: a cohort's summed loss has a block-diagonal Hessian (members never
interact), so one Hessian-vector product with a stacked vector is every member's own product,
and the Lanczos recurrences run with one set of coefficients per member. A single model is the
one-member case (`top_hessian_eigenvalue`).

Lanczos keeps the full basis and re-orthogonalises against it every iteration (the iteration
counts here are tens, the parameter counts thousands), so the top Ritz value converges to the
top algebraic eigenvalue without the ghost copies plain Lanczos produces; after as many
iterations as there are parameters it is exact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["cohort_sharpness", "lanczos_top", "top_hessian_eigenvalue"]

Vec = list[Tensor]
"""A batched vector: one tensor per parameter, each with the member as leading dimension."""


def _dot(a: Vec, b: Vec) -> Tensor:
    return sum((x * y).flatten(1).sum(dim=1) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def _axpy(alpha: Tensor, x: Vec, y: Vec) -> Vec:
    """y + alpha x with a per-member alpha (M,)."""
    return [yy + alpha.view(-1, *([1] * (yy.dim() - 1))) * xx for xx, yy in zip(x, y, strict=True)]


def lanczos_top(
    hvp: Callable[[Vec], Vec], like: Sequence[Tensor], iters: int, seed: int = 0
) -> Tensor:
    """Top algebraic eigenvalue (M,) of the symmetric operator ``hvp`` on batched vectors
    shaped like ``like``; ``iters`` is capped at the dimension."""
    members = like[0].shape[0]
    dim = sum(t[0].numel() for t in like)
    iters = max(1, min(iters, dim))
    gen = torch.Generator().manual_seed(seed)
    q = [torch.randn(t.shape, generator=gen, dtype=t.dtype).to(t.device) for t in like]
    norm = _dot(q, q).sqrt()
    q = _axpy(1.0 / norm - 1.0, q, q)  # q / norm
    basis = [q]
    alphas: list[Tensor] = []
    betas: list[Tensor] = []
    for j in range(iters):
        w = hvp(basis[-1])
        alpha = _dot(w, basis[-1])
        alphas.append(alpha)
        if j == iters - 1:
            break
        # Full re-orthogonalisation (twice is enough, Parlett's "twice is enough").
        for _ in range(2):
            for v in basis:
                w = _axpy(-_dot(w, v), v, w)
        beta = _dot(w, w).sqrt()
        betas.append(beta)
        # A member whose Krylov space is exhausted gets a zero vector: its T decouples.
        scale = torch.where(beta > 1e-12 * (alpha.abs() + 1), 1.0 / beta, torch.zeros_like(beta))
        basis.append([t * scale.view(-1, *([1] * (t.dim() - 1))) for t in w])
    k = len(alphas)
    t_mat = torch.zeros(members, k, k, dtype=torch.float64)
    for i, a in enumerate(alphas):
        t_mat[:, i, i] = a.detach().double().cpu()
    for i, b in enumerate(betas):
        t_mat[:, i, i + 1] = b.detach().double().cpu()
        t_mat[:, i + 1, i] = b.detach().double().cpu()
    return torch.linalg.eigvalsh(t_mat)[:, -1]


def _loss(out: Tensor, y: Tensor, classification: bool) -> Tensor:
    if classification:
        return F.cross_entropy(out, y)
    return (out - y).square().mean()


def top_hessian_eigenvalue(
    model: nn.Module, x: Tensor, y: Tensor, classification: bool = True, iters: int = 20
) -> float:
    """Top Hessian eigenvalue of ``model``'s mean loss on (x, y) (a plain, single model)."""
    params = [p for p in model.parameters() if p.requires_grad]
    loss = _loss(model(x), y, classification)
    grads = torch.autograd.grad(loss, params, create_graph=True)

    def hvp(v: Vec) -> Vec:
        hv = torch.autograd.grad(grads, params, grad_outputs=[t[0] for t in v], retain_graph=True)
        return [h.unsqueeze(0) for h in hv]

    return float(lanczos_top(hvp, [p.unsqueeze(0) for p in params], iters)[0])


def cohort_sharpness(
    model: nn.Module, x: Tensor, y: Tensor, classification: bool, iters: int = 20
) -> Tensor:
    """Every member's top Hessian eigenvalue (M,) of its mean loss on the shared batch (x, y).

    ``model`` is a `models.mlp.CohortMLP`: (M, B, in) -> (M, B, out).
    """
    params = list(model.parameters())
    members = params[0].shape[0]
    out = model(x.unsqueeze(0).expand(members, -1, -1))
    if classification:
        per = (
            F.cross_entropy(
                out.reshape(-1, out.shape[-1]),
                y.unsqueeze(0).expand(members, -1).reshape(-1),
                reduction="none",
            )
            .view(members, -1)
            .mean(dim=1)
        )
    else:
        per = (out - y.unsqueeze(0)).square().mean(dim=(1, 2))
    grads = torch.autograd.grad(per.sum(), params, create_graph=True)

    def hvp(v: Vec) -> Vec:
        return list(torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True))

    return lanczos_top(hvp, [p.detach() for p in params], iters)
