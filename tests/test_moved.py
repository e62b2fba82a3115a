"""Old import paths of moved modules keep working for one release, with a DeprecationWarning."""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from lmforge._moved import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_path_warns_and_is_the_new_module(old: str) -> None:
    # a fresh interpreter: the old name must not be cached in sys.modules by an earlier test
    code = (f"import warnings, importlib; warnings.simplefilter('error')\n"
            f"try:\n    importlib.import_module({old!r})\nexcept DeprecationWarning as w:\n    print(w)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"{old} moved to {MOVED[old]}" in out.stdout
    with pytest.warns(DeprecationWarning):
        sys.modules.pop(old, None)
        module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED[old])
    assert module.__name__ == MOVED[old] and module.__spec__.name == MOVED[old]


def test_new_paths_do_not_warn() -> None:
    code = ("import warnings, importlib; warnings.simplefilter('error')\n"
            f"[importlib.import_module(m) for m in {sorted(set(MOVED.values()))!r}]")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
