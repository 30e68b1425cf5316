"""The client is tested against the service's own fixtures: the trained store and the test split."""

from tests.app.conftest import test_split

__all__ = ["test_split"]
