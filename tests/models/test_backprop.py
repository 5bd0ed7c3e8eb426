"""The hand-written cohort step (models.backprop) against autograd on the same model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.activations import ACTIVATIONS
from models.backprop import DERIVATIVES, FORWARDS, cross_entropy_step, supports
from models.mlp import MLPShape, build_cohort

DEPTHS = [3, 3, 2, 1]  # deepest first, as train_cohort orders members


def _cohort(activation: str, depths: list[int]) -> torch.nn.Module:
    shape = MLPShape(12, 5, 8, max(depths), activation)
    inits = ["kaiming_normal", "xavier_normal", "auto", "orthogonal"][: len(depths)]
    return build_cohort(shape, inits, list(range(len(depths))), depths)


def _batch(members: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(members, 16, 12, generator=g), torch.randint(
        0, 5, (members, 16), generator=g
    )


def _autograd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    out = model(x)
    losses = F.cross_entropy(out.transpose(1, 2), y, reduction="none").mean(dim=1)
    safe = torch.where(torch.isfinite(losses), losses, torch.zeros_like(losses))
    grads = torch.autograd.grad(safe.sum(), list(model.parameters()))
    accuracy = (out.argmax(dim=-1) == y).float().mean(dim=1)
    return losses.detach(), accuracy, grads


def test_every_derivative_is_a_registered_activation() -> None:
    assert set(DERIVATIVES) <= set(ACTIVATIONS)


@pytest.mark.parametrize("activation", sorted(DERIVATIVES))
@pytest.mark.parametrize("depths", [[3, 3, 3, 3], DEPTHS])
def test_the_hand_written_step_equals_autograd(activation: str, depths: list[int]) -> None:
    model = _cohort(activation, depths)
    assert supports(model)
    x, y = _batch(len(depths))
    losses, accuracy, grads = cross_entropy_step(model, x, y)
    want_losses, want_accuracy, want_grads = _autograd(model, x, y)
    torch.testing.assert_close(losses, want_losses, rtol=1e-6, atol=1e-7)
    assert torch.equal(accuracy, want_accuracy)
    assert len(grads) == len(want_grads)
    # A hidden layer's gradient covers the members that compute it (a prefix): the rest are
    # shallower members' identity layers, whose gradient autograd finds exactly zero.
    rows = [*model.computed_members, len(depths)] * 2  # weights, then biases
    for got, want, k in zip(grads, want_grads, rows, strict=True):
        assert got.shape == (k, *want.shape[1:])
        torch.testing.assert_close(got, want[:k], rtol=1e-5, atol=1e-6)
        assert torch.count_nonzero(want[k:]) == 0
    if len(set(depths)) > 1:
        assert any(k < len(depths) for k in model.computed_members)  # the case is exercised


@pytest.mark.parametrize("activation", sorted(FORWARDS))
def test_a_faster_forward_computes_the_registered_activation(activation: str) -> None:
    assert activation in DERIVATIVES
    module = ACTIVATIONS[activation].factory(1)
    z = torch.cat(
        [
            torch.linspace(-30.0, 30.0, 20001),
            torch.tensor([0.0, -0.0, 1e-8, -1e-8, float("inf"), float("-inf"), float("nan")]),
        ]
    )
    got, want = FORWARDS[activation](z.clone()), module(z)
    # Within one float32 rounding of 1, non-finite values included (nan where nan).
    torch.testing.assert_close(got, want, rtol=1e-6, atol=6e-8, equal_nan=True)


def test_a_diverged_member_disturbs_no_one() -> None:
    model = _cohort("tanh", DEPTHS)
    x, y = _batch(len(DEPTHS))
    _, _, clean = cross_entropy_step(model, x, y)
    with torch.no_grad():
        model.weights[-1][1].fill_(float("inf"))  # member 1's logits overflow
    losses, _, grads = cross_entropy_step(model, x, y)
    assert not torch.isfinite(losses[1]) and torch.isfinite(losses[[0, 2, 3]]).all()
    for got, before in zip(grads, clean, strict=True):
        keep = [m for m in (0, 2, 3) if m < got.shape[0]]  # members that have this layer
        assert torch.equal(got[keep], before[keep])  # bit for bit: no one else is disturbed


def test_models_it_cannot_train_take_the_autograd_path() -> None:
    assert not supports(_cohort("prelu", [2, 2]))  # a parameter per member
    assert not supports(_cohort("softplus", [2, 2]))  # no derivative written
    assert not supports(_cohort("relu", [1, 3, 2]))  # not deepest first: per-member select
