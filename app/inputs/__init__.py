"""Turning what clients send (image files, arrays, KServe v2 tensors) into 28x28 digits."""
