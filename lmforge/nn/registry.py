"""``Registry``: a name -> builder dict (activations, position kinds, attention kinds, heads) that checks its
own keys where they are looked up: an unknown name raises a ConfigError naming the ModelConfig field and the
closest registered names, so ``lmforge.config`` need not import the modules that implement them."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from lmforge.errors import ConfigError, suggest

V = TypeVar("V")


class Registry(dict[str, V]):
    """``REGISTRY[name]`` as a dict; a missing name is a ConfigError about ``ModelConfig.<field>``."""

    def __init__(self, field: str, entries: Mapping[str, V]) -> None:
        super().__init__(entries)
        self.field = field

    def __missing__(self, key: Any) -> V:
        raise self.unknown(key, self.field)

    def lookup(self, key: Any, field: str) -> V:
        """The entry of ``key``, read for another ModelConfig field than the registry's own (an activation
        registry serves ``activation``, ``mlm_activation`` and ``classifier_activation``)."""
        if not isinstance(key, str) or key not in self:
            raise self.unknown(key, field)
        return dict.__getitem__(self, key)

    def unknown(self, key: Any, field: str) -> ConfigError:
        names = list(self)
        return ConfigError(f"ModelConfig.{field}={key!r} is not one of: {', '.join(names)}."
                           f"{suggest(str(key), names)}")
