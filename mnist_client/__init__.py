"""A small typed client for mnist-serve, over HTTP (httpx) or gRPC, sync and async. It imports no
TensorFlow."""

from mnist_client.client import AsyncClient, Client
from mnist_client.results import MnistServeError, Prediction, TestSample, UnreachableError

__all__ = ["AsyncClient", "Client", "MnistServeError", "Prediction", "TestSample", "UnreachableError"]
