"""The cohort MLP: determinism, equivalence with the plain model, member selection."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from models import CohortMLP, MLPShape, UnknownNameError, build_cohort, build_mlp
from models.activations import CohortPReLU


def _x(members: int, batch: int, features: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(members, batch, features, generator=torch.Generator().manual_seed(seed))


SHAPE = MLPShape(in_features=6, out_features=3, width=16, depth=3, activation="tanh")


def test_parameter_layout() -> None:
    model = build_cohort(SHAPE, ["auto", "auto"], [0, 1])
    assert [tuple(w.shape) for w in model.weights] == [
        (2, 6, 16),
        (2, 16, 16),
        (2, 16, 16),
        (2, 16, 3),
    ]
    assert [tuple(b.shape) for b in model.biases] == [(2, 1, 16), (2, 1, 16), (2, 1, 16), (2, 1, 3)]
    assert model(_x(2, 5, 6)).shape == (2, 5, 3)


def test_deterministic_for_a_seed_and_independent_of_global_rng() -> None:
    torch.manual_seed(1)
    a = build_cohort(SHAPE, ["kaiming_normal"], [11])
    torch.manual_seed(2)
    b = build_cohort(SHAPE, ["kaiming_normal"], [11])
    c = build_cohort(SHAPE, ["kaiming_normal"], [12])
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.weights[0], c.weights[0])


def test_member_weights_do_not_depend_on_position_or_cohort_size() -> None:
    inits, seeds = ["orthogonal", "auto", "torch_default"], [5, 6, 7]
    big = build_cohort(SHAPE, inits, seeds)
    small = build_cohort(SHAPE, inits[2:], seeds[2:])
    for p_big, p_small in zip(big.parameters(), small.parameters(), strict=True):
        assert torch.equal(p_big[2], p_small[0])


@pytest.mark.parametrize(
    ("activation", "init"),
    [
        ("tanh", "auto"),
        ("relu", "torch_default"),
        ("prelu", "auto"),
        ("selu", "orthogonal"),
        ("gelu", "xavier_uniform"),
    ],
)
def test_cohort_member_equals_build_mlp(activation: str, init: str) -> None:
    shape = MLPShape(6, 3, 16, 3, activation)
    inits, seeds = ["small_normal", init, "kaiming_uniform"], [1, 42, 3]
    cohort = build_cohort(shape, inits, seeds)
    plain = build_mlp(shape, init, 42)
    assert sum(isinstance(m, nn.Linear) for m in plain) == shape.depth + 1
    x = _x(3, 8, 6)
    with torch.no_grad():
        torch.testing.assert_close(plain(x[1]), cohort(x)[1], rtol=1e-6, atol=1e-6)


def test_build_mlp_leaves_global_rng_alone() -> None:
    before = torch.get_rng_state()
    build_mlp(SHAPE, "torch_default", 0)
    assert torch.equal(before, torch.get_rng_state())


def test_output_layer_uses_gain_one() -> None:
    # kaiming_normal with tanh's gain 5/3 on hidden layers but 1 on the output layer.
    shape = MLPShape(256, 256, 256, 1, "tanh")
    model = build_cohort(shape, ["kaiming_normal"], [0])
    assert model.weights[0].std().item() == pytest.approx((5 / 3) / 16, rel=0.02)
    assert model.weights[1].std().item() == pytest.approx(1 / 16, rel=0.02)


def test_select_keeps_the_right_members_including_prelu_slopes() -> None:
    shape = MLPShape(6, 3, 8, 2, "prelu")
    model = build_cohort(shape, ["auto"] * 4, [0, 1, 2, 3])
    with torch.no_grad():
        for i, act in enumerate(model.activations):
            assert isinstance(act, CohortPReLU)
            act.weight.copy_(torch.arange(4.0).view(4, 1, 1) + 10 * i)
    x = _x(4, 5, 6)
    with torch.no_grad():
        before = model(x)
    originals = [p.detach().clone() for p in model.parameters()]
    keep = torch.tensor([3, 1])
    model.select(keep)
    assert model.members == 2
    for old, new in zip(originals, model.parameters(), strict=True):
        assert isinstance(new, nn.Parameter) and new.requires_grad
        assert torch.equal(new, old[keep])
    second = model.activations[1]
    assert isinstance(second, CohortPReLU)
    assert torch.equal(second.weight.view(-1), torch.tensor([13.0, 11.0]))
    with torch.no_grad():
        torch.testing.assert_close(model(x[keep]), before[keep], rtol=0, atol=0)


@pytest.mark.parametrize("depth", [1, 64])
def test_extreme_depths_build_and_run(depth: int) -> None:
    shape = MLPShape(4, 2, 8, depth, "relu")
    model = build_cohort(shape, ["auto", "auto"], [0, 1])
    assert len(model.weights) == depth + 1
    out = model(_x(2, 3, 4))
    assert out.shape == (2, 3, 2) and torch.isfinite(out).all()
    plain = build_mlp(shape, "auto", 1)
    x = _x(2, 3, 4)
    with torch.no_grad():
        torch.testing.assert_close(plain(x[1]), model(x)[1], rtol=1e-5, atol=1e-6)


def test_shape_validation_and_pickling() -> None:
    good = dict(in_features=2, out_features=2, width=4, depth=1)
    for bad in ({"depth": 0}, {"depth": 65}, {"width": 0}, {"in_features": 0}):
        with pytest.raises(ValueError):
            MLPShape(**{**good, **bad}, activation="relu")
    with pytest.raises(UnknownNameError):
        MLPShape(2, 2, 4, 1, "swish")
    shape = MLPShape(2, 2, 4, 1, " ReLU ")
    assert shape.activation == "relu"
    assert pickle.loads(pickle.dumps(shape)) == shape
    with pytest.raises(ValueError, match="seeds"):
        build_cohort(shape, ["auto"], [1, 2])
    with pytest.raises(ValueError, match="at least one"):
        CohortMLP(shape, 0)


@pytest.mark.parametrize(
    ("activation", "depths"),
    [
        ("gelu", [1, 4, 2, 3]),  # any order: the select path
        ("gelu", [4, 3, 2, 1]),  # deepest first (as train_cohort orders them): the slice path
        ("prelu", [4, 3, 1, 1]),  # per-member activation parameters: the select path
    ],
)
def test_mixed_depth_members_equal_their_own_network(activation: str, depths: list[int]) -> None:
    import torch

    from models.mlp import MLPShape, build_cohort, build_mlp

    shape = MLPShape(in_features=10, out_features=3, width=8, depth=4, activation=activation)
    inits = ["kaiming_normal", "xavier_normal", "auto", "orthogonal"]
    seeds = [3, 5, 7, 11]
    cohort = build_cohort(shape, inits, seeds, depths)
    assert cohort.mixed
    x = torch.randn(6, 10, generator=torch.Generator().manual_seed(0))
    out = cohort(x.unsqueeze(0).expand(4, -1, -1))
    for m, (init, seed, depth) in enumerate(zip(inits, seeds, depths, strict=True)):
        own = build_mlp(MLPShape(10, 3, 8, depth, activation), init, seed)
        torch.testing.assert_close(out[m], own(x), rtol=1e-6, atol=1e-6)
    # Identity layers get exactly zero gradient; real layers do not.
    out.square().sum().backward()
    for i in range(1, 4):
        for m, depth in enumerate(depths):
            grad = cohort.weights[i].grad[m]
            assert bool((grad == 0).all()) == (i >= depth), (i, m)
    assert cohort.layer_masks()[0] is None  # the first layer is real for every member


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_mixed_depth_identity_layers_never_change_under_any_optimizer(optimizer: str) -> None:
    from models.mlp import MLPShape, build_cohort
    from models.train import CohortSpec, Member, _CohortOptimizer

    shape = MLPShape(in_features=10, out_features=3, width=8, depth=3, activation="relu")
    depths = [1, 3, 2]
    cohort = build_cohort(shape, ["auto"] * 3, [0, 1, 2], depths)
    params = list(cohort.parameters())
    lr = torch.full((3, 1, 1), 0.01)
    opt = _CohortOptimizer(optimizer, params, lr, 0.9)
    x = torch.randn(3, 16, 10, generator=torch.Generator().manual_seed(0))
    for _ in range(5):
        grads = torch.autograd.grad(cohort(x).square().sum(), params)
        opt.step(params, grads)
    eye = torch.eye(8)
    for i in range(1, 3):  # hidden-to-hidden layers 1 and 2
        for m, depth in enumerate(depths):
            w, b = cohort.weights[i][m], cohort.biases[i][m]
            if i >= depth:
                assert torch.equal(w, eye) and torch.equal(b, torch.zeros_like(b))
            else:
                assert not torch.equal(w, eye)
    members = tuple(Member("auto", 0.1, 0, depth=d) for d in depths)
    with pytest.raises(ValueError, match="exceed the cohort's depth"):
        CohortSpec("relu", depth=2, width=16, optimizer="adam", members=members)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_a_gradient_of_the_leading_members_updates_as_the_full_zero_padded_one(
    optimizer: str,
) -> None:
    # models.backprop hands a mixed-depth cohort's hidden layers gradients of the members that
    # compute them only; the update must be bit for bit the one of the zero-padded gradient.
    from models.train import _CohortOptimizer

    gen = torch.Generator().manual_seed(0)
    start = torch.randn(5, 4, 3, generator=gen)
    lr = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5]).view(-1, 1, 1)
    partial, padded = start.clone(), start.clone()
    opt_partial = _CohortOptimizer(optimizer, [partial], lr, 0.9)
    opt_padded = _CohortOptimizer(optimizer, [padded], lr, 0.9)
    for _ in range(4):
        g = torch.randn(3, 4, 3, generator=gen)  # members 0-2 compute the layer
        opt_partial.step([partial], [g])
        opt_padded.step([padded], [torch.cat([g, torch.zeros(2, 4, 3)])])
    assert torch.equal(partial, padded)
    assert torch.equal(partial[3:], start[3:]) and not torch.equal(partial[:3], start[:3])
