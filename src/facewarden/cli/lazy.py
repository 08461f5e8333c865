"""Names the CLI imports on first use, so that ``facewarden --help`` loads no database,
model or video library (start-up time; docs/detection.md has the measurement)."""

from __future__ import annotations

import importlib
from typing import Any


class Lazy:
    """Stands for ``module.name``: calling it or reading an attribute imports the module."""

    def __init__(self, module: str, name: str) -> None:
        self._module, self._name = module, name
        self._target: Any = None

    def _load(self) -> Any:
        if self._target is None:
            self._target = getattr(importlib.import_module(self._module), self._name)
        return self._target

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._load()(*args, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._load(), attr)
