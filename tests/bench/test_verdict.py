"""bench.verdict: it measures only versions that carry an approximate score, and says so in one line."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import assert_one_line_error, run_cli
from tests.support.paths import REPO_ROOT


def test_a_version_without_an_approximate_score_is_refused_in_one_line(
    trained_store: Path, mnist_dir: Path, tmp_path: Path
) -> None:
    # The fixture `cnn` judges with the energy score: nothing to approximate.
    result = run_cli(
        "bench.verdict",
        *("--store", str(trained_store), "--data-dir", str(mnist_dir), "--out", str(tmp_path / "v.md")),
        cwd=REPO_ROOT,
    )
    assert_one_line_error(result, "python -m bench.verdict", "version 1 has no approximate score")
    assert not (tmp_path / "v.md").exists()
