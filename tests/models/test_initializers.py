"""Every initializer against its documented formula, on real layers."""

from __future__ import annotations

import math
import pickle

import pytest
import torch
from torch import nn

from models import ACTIVATIONS, INITIALIZERS, UnknownNameError, get_initializer, init_layer
from models.initializers import resolve_init

CONCRETE = sorted(name for name in INITIALIZERS if name != "auto")
SENTINEL = 123.0


def _layer(fan_out: int, fan_in: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.full((fan_out, fan_in), SENTINEL), torch.full((fan_out,), SENTINEL)


def _init(
    init: str, gain: float, fan_out: int = 512, fan_in: int = 512, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    weight, bias = _layer(fan_out, fan_in)
    init_layer(weight, bias, init, gain, torch.Generator().manual_seed(seed))
    return weight, bias


def _expected(init: str, gain: float, fan_out: int, fan_in: int) -> tuple[str, float]:
    """('std' | 'bound', value) from the module docstring's table."""
    return {
        "kaiming_normal": ("std", gain / math.sqrt(fan_in)),
        "kaiming_uniform": ("bound", gain * math.sqrt(3 / fan_in)),
        "xavier_normal": ("std", math.sqrt(2 / (fan_in + fan_out))),
        "xavier_uniform": ("bound", math.sqrt(6 / (fan_in + fan_out))),
        # Unit vectors of norm gain along the longer side: entries have std gain/sqrt(longer).
        "orthogonal": ("std", gain / math.sqrt(max(fan_in, fan_out))),
        "lecun_normal": ("std", 1 / math.sqrt(fan_in)),
        "small_normal": ("std", 0.01),
        "torch_default": ("bound", 1 / math.sqrt(fan_in)),
    }[init]


@pytest.mark.parametrize("activation", ["relu", "tanh", "selu", "leaky_relu", "sigmoid"])
@pytest.mark.parametrize("init", CONCRETE)
def test_scale_matches_documented_formula(init: str, activation: str) -> None:
    gain = ACTIVATIONS[activation].gain
    fan_out, fan_in = 512, 256  # non-square so fan_in and fan_out formulas are told apart
    weight, bias = _init(init, gain, fan_out, fan_in)
    assert not (weight == SENTINEL).any()
    kind, value = _expected(init, gain, fan_out, fan_in)
    if kind == "std":
        assert weight.mean().item() == pytest.approx(0.0, abs=0.02 * value)
        assert weight.std().item() == pytest.approx(value, rel=0.01)
    else:
        assert weight.abs().max().item() <= value
        assert weight.abs().max().item() == pytest.approx(value, rel=0.01)
        assert weight.std().item() == pytest.approx(value / math.sqrt(3), rel=0.01)
    if init == "torch_default":
        bound = 1 / math.sqrt(fan_in)
        assert bias.abs().max().item() <= bound
        assert bias.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.15)
    else:
        assert torch.equal(bias, torch.zeros(fan_out))


@pytest.mark.parametrize("gain", [1.0, 5 / 3])
def test_orthogonal_is_gain_times_orthogonal(gain: float) -> None:
    weight, _ = _init("orthogonal", gain, 256, 512)  # wide: rows are orthonormal
    torch.testing.assert_close(weight @ weight.T, gain**2 * torch.eye(256), atol=1e-4, rtol=0)


def test_torch_default_is_exactly_nn_linear_default() -> None:
    with torch.random.fork_rng():
        torch.manual_seed(7)
        linear = nn.Linear(48, 32)
    weight, bias = _init("torch_default", 1.0, 32, 48, seed=7)
    assert torch.equal(weight, linear.weight.detach())
    assert torch.equal(bias, linear.bias.detach())


@pytest.mark.parametrize("init", CONCRETE)
def test_deterministic_for_a_generator_seed(init: str) -> None:
    a = _init(init, 1.3, 64, 32, seed=3)
    b = _init(init, 1.3, 64, 32, seed=3)
    c = _init(init, 1.3, 64, 32, seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_global_rng_is_not_used() -> None:
    before = torch.get_rng_state()
    for init in CONCRETE:
        _init(init, 1.0, 16, 16)
    assert torch.equal(before, torch.get_rng_state())


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_auto_resolves_per_activation(activation: str) -> None:
    assert resolve_init("auto", activation) == ACTIVATIONS[activation].auto_init
    assert resolve_init(" AUTO ", activation.upper()) == ACTIVATIONS[activation].auto_init
    assert resolve_init("Orthogonal", activation) == "orthogonal"


def test_auto_resolution_table() -> None:
    assert resolve_init("auto", "relu") == "kaiming_normal"
    assert resolve_init("auto", "leaky_relu") == "kaiming_normal"
    assert resolve_init("auto", "selu") == "lecun_normal"
    assert resolve_init("auto", "identity") == "lecun_normal"
    assert resolve_init("auto", "tanh") == "xavier_normal"


def test_auto_must_be_resolved_before_init_layer() -> None:
    weight, bias = _layer(4, 4)
    with pytest.raises(ValueError, match="resolve_init"):
        init_layer(weight, bias, "auto", 1.0, torch.Generator().manual_seed(0))


def test_unknown_names_and_bad_shapes() -> None:
    with pytest.raises(UnknownNameError, match="unknown initializer 'he'; valid: auto, "):
        get_initializer("he")
    with pytest.raises(UnknownNameError, match="unknown activation"):
        resolve_init("auto", "swish")
    with pytest.raises(ValueError, match="fan_out"):
        init_layer(torch.empty(4, 3), torch.empty(3), "lecun_normal", 1.0, torch.Generator())


def test_gain_usage_flags() -> None:
    # A gain that changes nothing must be flagged as unused, and vice versa.
    for init in CONCRETE:
        a, _ = _init(init, 1.0, 64, 64, seed=1)
        b, _ = _init(init, 2.0, 64, 64, seed=1)
        assert (not torch.equal(a, b)) == INITIALIZERS[init].uses_gain, init


def test_registry_entries_pickle() -> None:
    # Ray ships configs and registry entries to workers by pickling.
    for name, entry in INITIALIZERS.items():
        clone = pickle.loads(pickle.dumps(entry))
        assert clone == entry, name
