"""Where the project is, for tests that read its files or start its commands."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENT_DOC = REPO_ROOT / "docs" / "deployment.md"
# The sample upload the README's `curl -F file=@samples/digit.png` sends: MNIST test image 0, a 7.
SAMPLE_DIGIT = REPO_ROOT / "samples" / "digit.png"
