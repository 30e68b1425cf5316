"""Record how long the test suite takes, from the output of a run of `.ci/run`, for the README and
the development docs (tests/test_result_pages.py keeps them in step):

    CI=true bash .ci/run 2>&1 | tee ci.log
    python scripts/suite_time.py ci.log      # writes bench/results/test-suite.json
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "test-suite.json"
# pytest's last line of a lane, e.g. "==== 1244 passed, 325 deselected in 78.90s (0:01:18) ===="
LANE = re.compile(r"=+ (\d+) passed.* in ([\d.]+)s")
TOTAL = re.compile(r"The suite took (\d+) s")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.exit("usage: python scripts/suite_time.py CI_LOG")
    text = Path(argv[0]).read_text(errors="replace")
    lanes, total = LANE.findall(text), TOTAL.search(text)
    if len(lanes) != 2 or total is None:
        sys.exit(f"{argv[0]}: not the output of a whole run of .ci/run (two lanes and the total)")
    (fast_tests, fast_seconds), (slow_tests, slow_seconds) = lanes
    result = {
        "fast": {"tests": int(fast_tests), "seconds": float(fast_seconds)},
        "slow": {"tests": int(slow_tests), "seconds": float(slow_seconds)},
        "total_seconds": int(total.group(1)),
        "cores": os.cpu_count(),
        "measured_with": "CI=true bash .ci/run on a fresh clone",
    }
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
