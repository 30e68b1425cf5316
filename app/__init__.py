"""mnist-serve: the FastAPI inference service."""

__version__ = "0.1.0"
