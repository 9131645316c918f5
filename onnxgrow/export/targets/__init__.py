"""The export targets (``onnxgrow export --to``), one module each; importing this package
(which any import of :mod:`onnxgrow.export.targets.registry` does first) registers them.
Adding a target: a module here with one ``@export_target`` function, imported below, and
a test that exports through the CLI."""

# registration order is the order in which --help lists the targets
# isort: off
from onnxgrow.export.targets import state_dict, torch_module, keras_model, keras_weights, hf_folder  # noqa: F401
# isort: on
