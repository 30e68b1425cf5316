"""The contract between training and serving (store layout, metadata schema, input convention), and
between the service and its clients (upload normalisation, the gRPC protocol)."""

from model_store.metadata import ModelMetadata
from model_store.preprocessing import INPUT_SHAPE, NUM_CLASSES, InputSpec, to_model_input
from model_store.store import (
    DEFAULT_MODEL_NAME,
    DEFAULT_STORE_ROOT,
    InvalidModelError,
    LoadedModel,
    ModelStore,
    ModelStoreError,
    NoModelError,
)

__all__ = [
    "DEFAULT_MODEL_NAME",
    "DEFAULT_STORE_ROOT",
    "INPUT_SHAPE",
    "NUM_CLASSES",
    "InputSpec",
    "InvalidModelError",
    "LoadedModel",
    "ModelMetadata",
    "ModelStore",
    "ModelStoreError",
    "NoModelError",
    "to_model_input",
]
