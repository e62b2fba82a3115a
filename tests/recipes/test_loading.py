"""recipes/loading.py: the inference commands ask for transparent huge pages only before torch loads and
never over a value the user set."""
from __future__ import annotations

import os
import sys

import pytest

from lmforge.recipes.loading import prefer_huge_pages


def test_huge_pages_only_before_torch_and_never_over_the_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE", raising=False)
    assert "torch" in sys.modules and prefer_huge_pages() is False  # too late: the allocator read it already
    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "0")
    assert prefer_huge_pages() is False and os.environ["THP_MEM_ALLOC_ENABLE"] == "0"
    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE")
    assert prefer_huge_pages() is True and os.environ["THP_MEM_ALLOC_ENABLE"] == "1"
