"""One intra-op thread for the generation tests: decoding runs many tiny ops, where on a shared 2-core machine
thread hand-offs cost far more than the arithmetic."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
