"""Export: state dicts, PyTorch modules and Keras models written from grown graphs."""
