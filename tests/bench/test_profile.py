"""The profile report's arithmetic: samples attributed to the innermost known package, rows that add
up to the measured CPU time per request."""

from __future__ import annotations

from collections import Counter

from bench.profile import NATIVE, OUTSIDE, Profile, category, table
from bench.servers import Load


def test_a_sample_belongs_to_its_innermost_known_package() -> None:
    decode = [
        "run (uvicorn/server.py:1)",
        "predict (app/api/routes/predict.py:9)",
        "load (PIL/ImageFile.py:3)",
    ]
    assert category(decode) == "image decoding (Pillow)"
    assert category(decode[:2]) == "the app's own code"
    assert category([]) == NATIVE


def test_rows_add_up_to_the_cpu_time_per_request() -> None:
    def profile(cpu_us: float, counts: dict[str, int]) -> Profile:
        # 1,000 req/s with the GIL held half the time: 500 us of each request under the GIL.
        return Profile(Load(1000, 1.0, 2.0, 0), cpu_us, Counter(counts), 0.5)

    ours = profile(800, {"the app's own code": 3, "image decoding (Pillow)": 1})
    empty = profile(400, {"multipart parsing (python-multipart, our callbacks)": 1})
    rows = {
        line.split(" | ")[0].strip("| "): line.split(" | ")[1:]
        for line in table({"ours": ours, "empty": empty}).splitlines()
        if line.startswith("| ") and "---" not in line
    }
    assert rows["the app's own code"][0] == "375"
    assert rows["image decoding (Pillow)"][0] == "125"
    assert rows[OUTSIDE] == ["300", "0 |"]  # empty: 500 us under the GIL is capped at its 400 us of CPU
    assert rows["multipart parsing (python-multipart, our callbacks)"][1] == "400 |"
