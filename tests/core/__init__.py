"""What every growth shares: the pipeline, name resolution, model I/O, streamed tensors, scale."""
