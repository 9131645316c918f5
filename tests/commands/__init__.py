"""The commands that read models: inspect, verify, diff; widen through the CLI; TensorFlow-made models."""
