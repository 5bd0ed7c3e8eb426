"""The torch-free name lists equal the registries' keys (they exist so specs validate fast)."""

from __future__ import annotations

import subprocess
import sys

from models.activations import ACTIVATIONS
from models.datasets import DATASETS
from models.initializers import INITIALIZERS
from models.names import ACTIVATION_NAMES, DATASET_NAMES, INITIALIZER_NAMES, OPTIMIZER_NAMES
from models.train import OPTIMIZERS


def test_names_equal_the_registries() -> None:
    assert tuple(ACTIVATIONS) == ACTIVATION_NAMES
    assert tuple(INITIALIZERS) == INITIALIZER_NAMES
    assert tuple(DATASETS) == DATASET_NAMES
    assert tuple(OPTIMIZERS) == OPTIMIZER_NAMES


def test_validating_a_spec_imports_no_torch() -> None:
    code = (
        "import sys; from search.spec import parse_spec; "
        "parse_spec({'name': 'x', 'dataset': 'digits', 'space': {'activations': ['relu'], "
        "'depth': {'low': 1, 'high': 2}, 'initializers': ['auto'], "
        "'lr': {'low': 0.01, 'high': 0.1}, 'optimizers': ['sgd']}}); "
        "import search.orchestrate; import search.trainable; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
