"""Contract tests over every registered activation, plus the documented per-activation facts."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

from models import ACTIVATIONS, INITIALIZERS, UnknownNameError, get_activation
from models.activations import CohortPReLU

NAMES = sorted(ACTIVATIONS)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_finite_on_cohort_tensor(name: str) -> None:
    module = ACTIVATIONS[name].factory(3)
    x = (_randn(3, 5, 7) * 4).requires_grad_(True)  # wide enough to hit every kink and lobe
    y = module(x)
    assert y.shape == (3, 5, 7)
    assert torch.isfinite(y).all()
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for p in module.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_members_are_independent_and_single_member_accepts_plain_batches(name: str) -> None:
    x = _randn(3, 5, 7, seed=1)
    together = ACTIVATIONS[name].factory(3)(x)
    alone = ACTIVATIONS[name].factory(1)
    for m in range(3):
        # Equal up to an ulp, not bitwise: elements that fall in a SIMD loop's scalar tail go
        # through a different exp/erf implementation.
        torch.testing.assert_close(alone(x[m]), together[m])


@pytest.mark.parametrize("name", NAMES)
def test_info_is_consistent_and_picklable(name: str) -> None:
    info = ACTIVATIONS[name]
    assert info.gain > 0 and math.isfinite(info.gain)
    assert info.auto_init in INITIALIZERS and info.auto_init != "auto"
    assert info.description
    clone = pickle.loads(pickle.dumps(info))
    x = _randn(2, 3, 4)
    torch.testing.assert_close(clone.factory(2)(x), info.factory(2)(x))


def _derivative(name: str, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    ACTIVATIONS[name].factory(1)(x).sum().backward()
    assert x.grad is not None
    return x.grad


@pytest.mark.parametrize("name", NAMES)
def test_smooth_flag_matches_derivative_continuity(name: str) -> None:
    # On a fine grid a C^1 function's derivative moves by O(step); a kink jumps by O(1).
    grid = torch.linspace(-5, 5, 20001, dtype=torch.float64).view(1, 1, -1)
    jump = _derivative(name, grid).diff().abs().max().item()
    if ACTIVATIONS[name].smooth:
        assert jump < 0.01
    else:
        assert jump > 0.3


@pytest.mark.parametrize("name", NAMES)
def test_centred_flag_matches_negative_outputs(name: str) -> None:
    grid = torch.linspace(-8, 8, 4001).view(1, 1, -1)
    takes_negative = bool((ACTIVATIONS[name].factory(1)(grid) < 0).any())
    assert takes_negative == ACTIVATIONS[name].centred


def test_gains_and_auto_inits_are_as_documented() -> None:
    he = math.sqrt(2)
    expected_gain = {
        **dict.fromkeys(
            [
                "relu",
                "prelu",
                "srelu",
                "elu",
                "celu",
                "gelu",
                "silu",
                "mish",
                "softplus",
                "hardswish",
            ],
            he,
        ),
        "leaky_relu": math.sqrt(2 / (1 + 0.01**2)),
        "tanh": 5 / 3,
        **dict.fromkeys(["selu", "sigmoid", "softsign", "hardtanh", "identity"], 1.0),
    }
    assert set(expected_gain) <= set(ACTIVATIONS)
    for name, gain in expected_gain.items():
        assert ACTIVATIONS[name].gain == pytest.approx(gain), name
    # SELU must not take PyTorch's 3/4: it needs LeCun scaling to self-normalise.
    assert torch.nn.init.calculate_gain("selu") == pytest.approx(0.75)
    assert ACTIVATIONS["selu"].gain == 1.0
    for name in ("selu", "identity"):
        assert ACTIVATIONS[name].auto_init == "lecun_normal"
    for name in ("tanh", "sigmoid", "softsign", "hardtanh"):
        assert ACTIVATIONS[name].auto_init == "xavier_normal"
    for name in [*[n for n, g in expected_gain.items() if g == he], "leaky_relu"]:
        assert ACTIVATIONS[name].auto_init == "kaiming_normal"


def test_srelu_is_max_x_minus_one() -> None:
    x = torch.linspace(-4, 4, 801).view(1, 1, -1)
    y = ACTIVATIONS["srelu"].factory(1)(x)
    torch.testing.assert_close(y, torch.maximum(x, torch.tensor(-1.0)), rtol=0, atol=0)


def test_leaky_relu_slope() -> None:
    y = ACTIVATIONS["leaky_relu"].factory(1)(torch.tensor([[[-2.0, 3.0]]]))
    torch.testing.assert_close(y, torch.tensor([[[-0.02, 3.0]]]))


def test_prelu_has_one_learnable_slope_per_member() -> None:
    module = ACTIVATIONS["prelu"].factory(3)
    assert isinstance(module, CohortPReLU)
    assert module.weight.shape == (3, 1, 1)
    assert torch.equal(module.weight, torch.full((3, 1, 1), 0.25))
    with torch.no_grad():
        module.weight.copy_(torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1))
    y = module(-torch.ones(3, 2, 2))
    torch.testing.assert_close(y[:, 0, 0], torch.tensor([-0.1, -0.2, -0.3]))
    with pytest.raises(ValueError, match="needs \\(M, B, H\\)"):
        module(torch.ones(2, 2))


def test_lookup_normalises_case_and_whitespace() -> None:
    assert get_activation("ELU ") is ACTIVATIONS["elu"]
    assert get_activation("  Leaky_ReLU") is ACTIVATIONS["leaky_relu"]


def test_unknown_name_lists_valid_names_and_pickles() -> None:
    with pytest.raises(UnknownNameError) as excinfo:
        get_activation("foo")
    err = excinfo.value
    assert err.kind == "activation" and err.name == "foo"
    assert err.valid == tuple(sorted(ACTIVATIONS))
    assert str(err).startswith("unknown activation 'foo'; valid: ")
    assert ", ".join(sorted(ACTIVATIONS)) in str(err)
    assert isinstance(err, LookupError)
    clone = pickle.loads(pickle.dumps(err))
    assert str(clone) == str(err) and clone.valid == err.valid
