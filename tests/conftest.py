"""Shared fixtures: the real reference data beside the checkout, and quiet threads for 2-core CI."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REFDATA = (REPO / ".." / "shared" / "refdata").resolve()


@pytest.fixture(scope="session")
def refdata() -> Path:
    """Path to ../shared/refdata; skips the test with the reason when it is absent."""
    if not REFDATA.is_dir():
        pytest.skip(f"reference data not found at {REFDATA} (expected ../shared/refdata beside the repo)")
    return REFDATA
