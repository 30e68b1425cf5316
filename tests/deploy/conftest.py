"""The Dockerfile as the deployment tests read it: its stages, and the final (serving) stage."""

from __future__ import annotations

import pytest

from tests.support.dockerfile import (
    Stage,
    parse_dockerfile,
)


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile()


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]
