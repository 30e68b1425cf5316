"""docs/deployment.md covers building, running and scaling the containers, and other servers."""

from __future__ import annotations

from tests.support.compose import (
    COMPOSE_FILE,
    interpolation_variables,
)
from tests.support.paths import DEPLOYMENT_DOC


def test_deployment_doc_covers_build_run_scale_and_other_servers() -> None:
    doc = DEPLOYMENT_DOC.read_text()
    for needle in (
        "docker build",
        "docker compose up",
        "--scale api=",
        "--profile scale",
        "MODEL_NAME=mnist",
        "tensorflow_savedmodel",
        "config.pbtxt",
        "saved_model.pb",
    ):
        assert needle in doc, f"docs/deployment.md does not mention {needle}"
    for name in interpolation_variables(COMPOSE_FILE.read_text()):
        if name.startswith("DEPLOY_"):
            assert name in doc
