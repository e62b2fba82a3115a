"""Old import paths of modules that moved in 0.2.0 (the layout change), kept working for one release.

``import lmforge.fewshot`` still works but warns (DeprecationWarning) and hands back the module at its new
path, so a user's script keeps running while it says where to import from. Removed in the next release.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from typing import Any

# old module path -> new module path
MOVED: dict[str, str] = {
    "lmforge.static_decode": "lmforge.generation.static",
    "lmforge.prompts": "lmforge.prompting.templates",
    "lmforge.fewshot": "lmforge.prompting.fewshot",
    "lmforge.fillmask": "lmforge.prompting.fill_mask",
    "lmforge.finetune": "lmforge.recipes.finetune",
    "lmforge.quickstart": "lmforge.recipes.quickstart",
    "lmforge.metrics": "lmforge.tasks.metrics",
    "lmforge.objectives.losses": "lmforge.nn.losses",
    "lmforge.tasks.text": "lmforge.tasks.custom",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec: Any) -> Any:
        warnings.warn(f"{spec.name} moved to {self.new}; import it from there (the old path goes in the next "
                      "release)", DeprecationWarning, stacklevel=3)
        module = importlib.import_module(self.new)
        self.spec = module.__spec__  # the import machinery stamps the old spec on the module: put it back after
        return module

    def exec_module(self, module: Any) -> None:  # already executed under its new name
        module.__spec__ = self.spec


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name not in MOVED:
            return None
        return importlib.util.spec_from_loader(name, _Alias(MOVED[name]))


def install() -> None:
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
