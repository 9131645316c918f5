"""The ``onnxgrow`` command: a thin click layer over the Python API.

Exit status: 0 ok, 1 a check failed or differences were found, 2 usage or input error.
Each subcommand lives in its own module and registers itself on :data:`main`.
"""

from __future__ import annotations

import click

from onnxgrow import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onnxgrow")
def main() -> None:
    """Grow trained ONNX models without changing what they compute."""


def _register() -> None:
    """Import the subcommand modules; each adds itself to :data:`main`."""
    from onnxgrow.cli import deepen_cmd, diff_cmd, export_cmd, inspect_cmd, verify_cmd, widen_cmd  # noqa: F401


_register()
