"""lmforge: pre-train, fine-tune, distil, compress, evaluate, prompt and serve Transformer language models.

The public API, nothing else. Names resolve lazily so `import lmforge` stays fast and a CLI call
pays only for what it uses.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

from lmforge import _moved

_moved.install()  # old module paths (lmforge.fewshot, lmforge.finetune ...) warn and still import until 0.3

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "LmforgeError": "lmforge.errors",
    "ModelConfig": "lmforge.config",
    "PRESETS": "lmforge.presets",
    "Model": "lmforge.models.model",
    "ModelOutput": "lmforge.models.output",
    "Tokenizer": "lmforge.tokenization.tokenizer",
    "TrainConfig": "lmforge.train.config",
    "Trainer": "lmforge.train.loop",
    "TASKS": "lmforge.tasks",
    "generate": "lmforge.generation",
    "fill_mask": "lmforge.prompting.fill_mask",
    "fewshot_evaluate": "lmforge.prompting.fewshot",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lmforge' has no attribute {name!r}")


if TYPE_CHECKING:  # pragma: no cover
    from lmforge.config import ModelConfig
    from lmforge.errors import LmforgeError
    from lmforge.models.model import Model
    from lmforge.tokenization.tokenizer import Tokenizer
