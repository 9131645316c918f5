"""Tests that need an optional package beside the core install: PyTorch, or Keras (which the
tests run on the PyTorch backend).

``pytest -m "not torch and not tf"`` runs the suite where neither PyTorch, TensorFlow nor
Keras is installed, so a test that needs one must say so:

- a module that needs it throughout: ``pytest.importorskip("torch")`` before the imports
  that need it, and ``pytestmark = pytest.mark.torch``;
- one test: ``@pytest.mark.torch`` and ``pytest.importorskip("torch")`` in its body;
- one case of a parametrized test: ``pytest.param(..., marks=needs("torch"))``, or
  :func:`command_needs` for a case that runs a CLI command.
"""

from __future__ import annotations

from importlib.util import find_spec

import pytest


def needs(*modules: str) -> list[pytest.MarkDecorator]:
    """The marks of a test case that needs ``modules``: the ``torch`` marker, and a skip
    naming the ones that are not installed."""
    missing = [name for name in modules if find_spec(name) is None]
    return [pytest.mark.torch, pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)}")]


def command_needs(command: str) -> list[pytest.MarkDecorator]:
    """The marks of a test case running the CLI ``command`` (``"export --to keras"``): exports
    to a PyTorch module, a Keras model or a ``.pt`` state dict need PyTorch (and Keras)."""
    if "--to keras" in command:
        return needs("torch", "keras")
    if "--to torch" in command or ".pt" in command:
        return needs("torch")
    return []
