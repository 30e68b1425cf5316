"""The store's errors, each its own class; the message says which path or object and why."""

from __future__ import annotations


class ModelStoreError(Exception):
    """The store, or a version in it, cannot be used; the message says which path and why."""


class StoreUnavailableError(ModelStoreError):
    """The store cannot be reached or read right now (an S3 endpoint down, credentials refused): says
    nothing about a version, so the service keeps serving and tries again at its next look."""


class NoModelError(ModelStoreError):
    pass


class InvalidModelError(ModelStoreError):
    pass


class RejectedVersionError(ModelStoreError):
    """The version failed its publish-time gate: it is kept for inspection, never served."""


class InvalidVersionError(ModelStoreError, ValueError):
    pass


class InvalidNameError(ModelStoreError, ValueError):
    pass


class InvalidLocationError(ModelStoreError, ValueError):
    pass
