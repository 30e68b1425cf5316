"""A small typed client for mnist-serve, on httpx (sync and async). It imports no TensorFlow."""

from mnist_client.client import AsyncClient, Client, MnistServeError, Prediction, TestSample

__all__ = ["AsyncClient", "Client", "MnistServeError", "Prediction", "TestSample"]
