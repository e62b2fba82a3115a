"""lmforge never imports HF transformers at run time (it is a test-only reference): import every lmforge
module in a fresh interpreter and check that transformers was not loaded."""
from __future__ import annotations

import subprocess
import sys

CHILD = r"""
import importlib, pkgutil, sys
import lmforge
names = [m.name for m in pkgutil.walk_packages(lmforge.__path__, "lmforge.")]
for name in names:
    if name != "lmforge.__main__":  # runs the CLI
        importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m == "transformers" or m.startswith("transformers."))
print(len(names), loaded)
"""


def test_importing_every_module_does_not_load_transformers():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    count, loaded = out.stdout.strip().split(" ", 1)
    assert int(count) > 40 and loaded == "[]", out.stdout
