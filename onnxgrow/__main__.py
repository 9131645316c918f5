"""``python -m onnxgrow`` runs the CLI (signal handling first, see :mod:`onnxgrow.signals`)."""

from onnxgrow.signals import main

main()
