"""Where the project is, for tests that read its files or start its commands."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENT_DOC = REPO_ROOT / "docs" / "deployment.md"
