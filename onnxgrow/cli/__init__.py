"""The ``onnxgrow`` command: a thin click layer over the Python API.

Exit status: 0 ok, 1 a check failed or differences were found, 2 usage or input error.
Each subcommand lives in its own module and adds itself to :data:`main`. Command
modules import only click and light modules at import time; the numpy/onnx/onnx-ir
machinery is imported inside a command when it runs, so ``--help`` answers at once.
Libraries' log records below ERROR are not printed: onnx-ir logs a failed shape
inference (which onnxgrow tolerates) as a warning with a full traceback.
"""

from onnxgrow.cli import deepen_cmd, diff_cmd, export_cmd, inspect_cmd, verify_cmd, widen_cmd
from onnxgrow.cli._main import main

__all__ = ["deepen_cmd", "diff_cmd", "export_cmd", "inspect_cmd", "main", "verify_cmd", "widen_cmd"]
