"""Public names of a package imported on first use (PEP 562), so that importing the package
(``import onnxgrow``, the CLI's ``--help``) loads none of the heavy modules behind them."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_attributes(package: str, api: Mapping[str, str],
                    names: Sequence[str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of the package ``package``: a name of ``api``
    (public name → the module defining it) is imported from its module when first read,
    then kept in the package; ``dir()`` lists ``names``."""
    namespace = sys.modules[package].__dict__

    def getattr_(name: str) -> Any:
        module = api.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return list(names)

    return getattr_, dir_
