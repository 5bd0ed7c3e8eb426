"""Sharpness by Lanczos on Hessian-vector products against the exact Hessian's eigenvalues."""

from __future__ import annotations

import torch
from torch.func import functional_call

from models import MLPShape, build_cohort, build_mlp
from models.sharpness import cohort_sharpness, lanczos_top, top_hessian_eigenvalue


def _tiny(seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    # 2 hidden layers of width 4: 3*4+4 + 4*4+4 + 4*2+2 = 46 parameters.
    model = build_mlp(MLPShape(3, 2, 4, 2, "elu"), "kaiming_normal", seed).double()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(32, 3, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 2, (32,), generator=gen)
    return model, x, y


def _exact_top(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])

    def loss(theta: torch.Tensor) -> torch.Tensor:
        params, offset = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            n = shape.numel()
            params[name] = theta[offset : offset + n].view(shape)
            offset += n
        return torch.nn.functional.cross_entropy(functional_call(model, params, (x,)), y)

    hessian = torch.autograd.functional.hessian(loss, flat)
    return float(torch.linalg.eigvalsh(hessian)[-1])


def test_lanczos_matches_the_exact_hessian_of_a_tiny_mlp() -> None:
    for seed in (0, 1, 2):
        model, x, y = _tiny(seed)
        exact = _exact_top(model, x, y)
        estimate = top_hessian_eigenvalue(model, x, y, iters=20)
        assert abs(estimate - exact) <= 1e-6 * max(1.0, abs(exact)), (seed, estimate, exact)


def test_lanczos_finds_the_top_algebraic_not_the_largest_magnitude_eigenvalue() -> None:
    # eigenvalues -5, 1, 2 in a rotated basis: the top algebraic eigenvalue is 2, not -5
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0)))
    a = q @ torch.diag(torch.tensor([-5.0, 1.0, 2.0])) @ q.T

    def hvp(v: list[torch.Tensor]) -> list[torch.Tensor]:
        return [(a @ v[0][0]).unsqueeze(0)]

    top = lanczos_top(hvp, [torch.zeros(1, 3)], iters=3)
    assert abs(float(top[0]) - 2.0) < 1e-5


def test_cohort_sharpness_is_each_members_own() -> None:
    shape = MLPShape(3, 2, 4, 2, "tanh")
    cohort = build_cohort(shape, ["kaiming_normal", "xavier_normal"], [0, 5])
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(32, 3, generator=gen)
    y = torch.randint(0, 2, (32,), generator=gen)
    together = cohort_sharpness(cohort, x, y, classification=True, iters=40)
    for m, (init, seed) in enumerate((("kaiming_normal", 0), ("xavier_normal", 5))):
        alone = top_hessian_eigenvalue(build_mlp(shape, init, seed), x, y, iters=40)
        assert abs(float(together[m]) - alone) <= 1e-3 * max(1.0, abs(alone))
