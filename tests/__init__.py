"""The test suite: one folder per unit of onnxgrow, shared helpers in ``helpers/``."""
