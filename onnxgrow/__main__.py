"""``python -m onnxgrow`` runs the CLI."""

from onnxgrow.cli import main

main()
