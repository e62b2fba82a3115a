"""ModelOutput: what every forward returns, with HF's conventions.

Dict-like (``out["logits"]``, ``"loss" in out``, ``out.keys()``) and attribute access (``out.logits``; a
field that was not produced reads as None). Integer indexing follows HF's tuple order: ``out[0]``,
``out[1]``, ... are the non-None fields in their order (loss first when labels were given).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

class ModelOutput(OrderedDict):
    """An ordered mapping of the non-None output fields, in the order the producer passed them (HF's)."""

    def __init__(self, **fields: Any) -> None:
        super().__init__()
        for name, value in fields.items():
            if value is not None:
                super().__setitem__(name, value)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self.get(name)

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, (int, slice)):
            return self.to_tuple()[key]
        return super().__getitem__(key)

    def __setitem__(self, key: str, value: Any) -> None:
        if value is None:
            self.pop(key, None)
        else:
            super().__setitem__(key, value)

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(self.values())
