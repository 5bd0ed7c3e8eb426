"""Shared settings for the models tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # These tensors are tiny; with OpenMP's spin-waiting threads on a busy 2-core machine the
    # suite took 187 s with 2 threads against 15 s with 1 (measured). Restored afterwards so
    # tests elsewhere keep their own setting.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
