"""Ctrl-C and SIGTERM as exceptions, from the first instant of the ``onnxgrow`` command.

Rules: the command's entry (:func:`main`, the console script and ``python -m onnxgrow``)
installs the SIGTERM handler with nothing but the standard library imported, then imports
the CLI. SIGTERM raises :class:`Terminated`, Ctrl-C Python's KeyboardInterrupt; either
unwinds the stack (temporary files are removed) and the process exits 143 or 130, also
when the signal arrives while onnx, onnxruntime or torch are still being imported.
"""

from __future__ import annotations

import gc
import signal
import sys

EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class Terminated(KeyboardInterrupt):
    """SIGTERM (a CI job cancelled or timed out), raised so that cleanup code runs."""


#: Set once SIGTERM has arrived: an import it interrupted may surface later as another error
#: (an ImportError of a half-imported package), which must still exit as terminated.
_received: list[bool] = []


def raise_terminated(_signum: int, _frame: object) -> None:
    _received.append(True)
    raise Terminated


def terminated() -> bool:
    """Whether SIGTERM has arrived in this process."""
    return bool(_received)


def main() -> None:
    """Run the ``onnxgrow`` command with the signal handling in place before any import."""
    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        from onnxgrow.cli import main as cli

        cli()
    except Terminated:
        sys.stderr.write("terminated; nothing written\n")
        sys.exit(EXIT_TERMINATED)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; nothing written\n")
        sys.exit(EXIT_INTERRUPTED)
    finally:
        # Every output is complete (flushed and renamed into place) before the command
        # returns, so the objects left need no collection: frozen, the interpreter's exit
        # does not rescan them (0.3 s for a 20,000-node graph, see onnxgrow.collector).
        gc.freeze()
