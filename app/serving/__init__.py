"""The model in service: the compiled forward pass, the batcher, reloads, and the running state."""
