"""scripts/test.sh offline: what it cannot install (apt packages, kubectl, the KServe SDK, newman)
costs one line on stderr each, and the suite still starts."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.paths import REPO_ROOT

SCRIPT = (REPO_ROOT / "scripts" / "test.sh").read_text()
# The installing part: from the helper that reports a skip to the line that starts pytest.
INSTALLS = SCRIPT[SCRIPT.index("skipping() {") : SCRIPT.index("# Two test processes")]


def stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def test_every_install_that_fails_is_one_line_and_the_suite_goes_on(tmp_path: Path) -> None:
    """As root on a machine whose registries cannot be reached: every installer fails."""
    tools = tmp_path / "bin"
    tools.mkdir()
    stub(tools, "id", "echo 0")
    for failing in ("apt-get", "python", "npm"):
        stub(tools, failing, f"echo '{failing}: network unreachable' >&2; exit 100")
    script = f"set -euo pipefail\n{INSTALLS}\necho suite-starts\n"

    result = subprocess.run(
        ["/bin/bash", "-c", script],
        env={"PATH": str(tools), "KSERVE_SDK_DIR": str(tmp_path / "kserve")},
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "suite-starts"
    skipped = [line for line in result.stderr.splitlines() if line.startswith("test.sh: ")]
    assert len(skipped) == 4, result.stderr  # apt packages, kubectl, the KServe SDK, newman
    assert all(line.endswith("its tests skip.") for line in skipped)
    assert skipped[0].startswith("test.sh: chromium wrk buildah debootstrap openssl")  # nginx: if absent
