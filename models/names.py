"""The registries' names, importable without PyTorch.

The search driver validates specs against these before anything heavy is imported, so a bad
spec fails in a fraction of a second and PyTorch loads while Ray starts (search.orchestrate).
`tests/models/test_names.py` checks they equal the registries' keys, so they cannot drift.
"""

from __future__ import annotations

ACTIVATION_NAMES: tuple[str, ...] = (
    "relu",
    "leaky_relu",
    "prelu",
    "srelu",
    "elu",
    "selu",
    "celu",
    "gelu",
    "silu",
    "mish",
    "softplus",
    "tanh",
    "sigmoid",
    "hardtanh",
    "hardswish",
    "softsign",
    "identity",
)
INITIALIZER_NAMES: tuple[str, ...] = (
    "kaiming_normal",
    "kaiming_uniform",
    "xavier_normal",
    "xavier_uniform",
    "orthogonal",
    "lecun_normal",
    "small_normal",
    "torch_default",
    "auto",
)
DATASET_NAMES: tuple[str, ...] = ("digits", "mnist1d", "moons", "spirals", "teacher")
OPTIMIZER_NAMES: tuple[str, ...] = ("sgd", "momentum", "adam")
