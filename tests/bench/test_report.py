"""bench/run.py's arithmetic and report on real measurements (a recorded `cnn` run), the peers'
forward pass against the Keras model they serve, and the CLI's one-line mistakes. No timing here:
speed is what the benchmark measures, never what a test asserts."""

from __future__ import annotations

import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from bench.digits import encode
from bench.peers.model import MODEL_PATH_ENV, answer, decode_png, load_forward
from bench.peers.setup import bench_extra, find_interpreter, pinned_service_packages
from bench.report import (
    ModelRun,
    PrecisionRun,
    best_workers,
    combined_limit,
    dump,
    load,
    plot,
    ratios,
    render_run,
    targets,
    turn_ratios,
)
from bench.servers import Load
from model_store.metadata import MODEL_FILE
from model_store.mnist_data import load_split
from tests.conftest import assert_one_line_error, run_cli


def measured_cnn_run() -> ModelRun:
    """A side-by-side `cnn` run (64 and 1 connections), as bench/run.py records it.
    The 1-worker rows are made up to be worse, so the 2-worker ones are each server's best."""

    def sweep(c64: tuple[float, float], c1_p50: float) -> dict[int, dict[int, Load]]:
        rps, p99 = c64
        return {
            1: {1: Load(1000 / c1_p50, c1_p50, 2 * c1_p50, 0), 64: Load(rps / 2, 2 * p99, 4 * p99, 0)},
            2: {1: Load(1000 / c1_p50, c1_p50, 2 * c1_p50, 0), 64: Load(rps, 64 * 1000 / rps, p99, 0)},
        }

    return ModelRun(
        model="mnist v3 (cnn preset)",
        preset="cnn",
        sweeps={
            "empty": sweep((8143, 14), 0.24),
            "ours": sweep((1513, 64), 2.03),
            "bentoml": sweep((953, 311), 3.1),
            "litserve": sweep((1058, 104), 4.2),
        },
        forward={1: 1000 / 1.15, 32: 4100, 128: 4661},
        answer={1: 800, 32: 3900, 128: 4400},
        skipped={"naive": "left out with --skip"},
    )


def test_ratios_of_a_measured_run_are_the_ones_it_states() -> None:
    run = measured_cnn_run()
    found = ratios(run)

    assert best_workers(run.sweeps["ours"]) == 2
    assert found.top == 64
    assert (found.forward_batch, found.forward_images_per_second) == (128, 4661)
    assert found.combined_limit == pytest.approx(1 / (1 / 8143 + 1 / 4661))
    assert found.ours_over_combined == pytest.approx(0.51, abs=0.005)  # about half
    assert found.ours_over_empty == pytest.approx(1513 / 8143)
    assert found.c1_overhead_ms == pytest.approx(2.03 - 0.24)
    assert found.best_peer == "litserve"
    assert found.ours_over_peer == pytest.approx(1513 / 1058)
    assert found.ours_p99_over_peer_p99 == pytest.approx(64 / 104)


def test_targets_of_a_measured_run_all_fail_for_cnn() -> None:
    run = measured_cnn_run()
    checked = {target.name: target for target in targets(run, ratios(run))}

    assert set(checked) == {
        "throughput at c=64, ours / combined limit of float32",
        "p50 at c=1 above the empty endpoint",
        "throughput at c=64, ours / litserve",
        "p99 at c=64, ours / litserve",
    }
    assert not any(target.passed for target in checked.values())
    assert checked["p50 at c=1 above the empty endpoint"].goal == "<= 0.5 ms"
    assert checked["throughput at c=64, ours / combined limit of float32"].goal == ">= 0.7x"


def test_seed_has_no_throughput_target_of_its_own_and_peers_only_when_they_ran() -> None:
    """Ours against the empty endpoint is information now, in the ratios, not a target."""
    run = measured_cnn_run()
    run.preset = "seed"
    del run.sweeps["bentoml"], run.sweeps["litserve"]
    found = ratios(run)

    names = [target.name for target in targets(run, found)]

    assert names == ["p50 at c=1 above the empty endpoint"]
    assert found.best_peer is None and found.ours_over_peer is None
    assert "ours / empty = 0.19x (information" in render_run(run)


def test_combined_limit_is_the_harmonic_sum() -> None:
    assert combined_limit(8000, 8000) == pytest.approx(4000)
    assert combined_limit(1e9, 5000) == pytest.approx(5000, rel=1e-5)


def test_report_round_trips_through_json_and_draws_the_plot(tmp_path: Path) -> None:
    run = measured_cnn_run()

    runs, header = load(dump([run], "# header"))
    text = render_run(runs[0])
    plot(runs, tmp_path / "throughput.png")

    assert header == "# header" and runs == [run]
    assert "| ours | 2* | 64 | 1,513 |" in text
    assert "| ours / litserve | 2.07x | 1.43x |" in text
    assert "- naive: skipped, left out with --skip" in text
    assert "combined limit = 0.51x" in text
    with Image.open(tmp_path / "throughput.png") as image:
        assert image.format == "PNG" and image.width > image.height


def test_taking_turns_pairs_each_round_and_reports_the_median() -> None:
    run = measured_cnn_run()
    run.turns = {"empty": [5000, 3000, 6400], "ours": [1500, 1200, 1600]}

    text = render_run(load(dump([run], "# header"))[0][0])

    assert turn_ratios(run) == pytest.approx([0.30, 0.40, 0.25])
    assert "ours / empty = 0.30x, the median of the rounds' 0.30x, 0.40x, 0.25x" in text


def test_a_report_written_before_taking_turns_still_loads() -> None:
    written = dump([measured_cnn_run()], "# header").replace('"turns": {}', '"absent": {}')

    runs, _ = load(written)

    assert runs[0].turns == {} and "taking turns" not in render_run(runs[0])


def test_report_renders_again_from_the_json(tmp_path: Path) -> None:
    (tmp_path / "latest.json").write_text(dump([measured_cnn_run()], "# header"))

    result = run_cli("bench.report", str(tmp_path / "latest.json"), cwd=tmp_path)

    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "latest.md").read_text() == result.stdout.removesuffix("\n")
    assert "| ours | 2* | 64 | 1,513 |" in result.stdout
    assert (tmp_path / "throughput.png").stat().st_size > 0


def test_peers_answer_what_the_keras_model_answers(
    fixture_store: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both peers run `load_forward` on the PNG upload: same model file, same probabilities."""
    model_path = fixture_store / "mnist" / "1" / MODEL_FILE
    monkeypatch.setenv(MODEL_PATH_ENV, str(model_path))
    test = load_split(mnist_dir, "test")
    pngs = [encode(pixels) for pixels in test.images[:64]]

    decoded = np.stack([decode_png(png) for png in pngs])
    probabilities = load_forward()(decoded)
    reference = keras.saving.load_model(model_path, compile=False)(
        test.images[:64, :, :, None].astype(np.float32) / 255, training=False
    )

    np.testing.assert_array_equal(decoded, test.images[:64])
    np.testing.assert_allclose(probabilities, np.asarray(reference), atol=1e-6)
    first = answer(probabilities[0])
    assert first["prediction"] == int(np.argmax(reference[0]))
    assert first["probabilities"] == pytest.approx(probabilities[0].tolist())


@pytest.mark.skipif(shutil.which("wrk") is None, reason="bench.run checks for wrk first")
def test_unknown_preset_is_one_line(fixture_store: Path, tmp_path: Path) -> None:
    result = run_cli("bench.run", "--store", str(fixture_store), "--preset", "seed", cwd=tmp_path)

    assert_one_line_error(result, "bench.run", "no version of preset 'seed'", "mnist-train --preset seed")


def test_bad_arguments_are_one_line(tmp_path: Path) -> None:
    result = run_cli("bench.run", "--seconds", "0", "--version", "1", cwd=tmp_path)

    assert_one_line_error(result, "bench.run", "--seconds", "at least 1", status=2)


def test_negative_turns_are_one_line(tmp_path: Path) -> None:
    result = run_cli("bench.run", "--turns", "-1", "--version", "1", cwd=tmp_path)

    assert_one_line_error(result, "bench.run", "--turns", "0 or more", status=2)


def test_a_peer_without_an_interpreter_is_skipped_with_the_reason(tmp_path: Path) -> None:
    missing = find_interpreter("not_a_serving_framework", tmp_path / "no-venv")

    assert missing.python is None
    assert "not_a_serving_framework is not installed" in missing.problem
    assert "python -m bench.peers.setup" in missing.problem


def test_the_peers_venv_gets_the_bench_extra_and_the_services_tensorflow() -> None:
    extra = bench_extra()
    pins = pinned_service_packages()

    assert any(requirement.startswith("bentoml") for requirement in extra)
    assert any(requirement.startswith("litserve") for requirement in extra)
    assert f"keras=={keras.__version__}" in pins
    assert f"numpy=={np.__version__}" in pins


def test_the_normalised_upload_target_compares_cost_per_request() -> None:
    """1,000 native uploads a second against 400 that need normalising: each costs 2.5 native ones."""
    from bench.report import Scenarios

    run = measured_cnn_run()
    run.scenarios = Scenarios(
        workers=2,
        cold_start_seconds=7.0,
        rss_mib_per_worker=[500.0, 500.0],
        batch_images=1000,
        batch_images_per_second=4000.0,
        batch_errors=0,
        batch_in_process_images_per_second=5000.0,
        alone_c8=Load(900, 8.0, 12.0, 0),
        beside_large=Load(800, 9.0, 30.0, 0),
        large_batches_done=4,
        native_upload=Load(1000, 60.0, 90.0, 0),
        normalised_upload=Load(400, 150.0, 200.0, 0),
    )
    assert run.scenarios.normalisation_cost == 2.5
    target = next(t for t in targets(run, ratios(run)) if "JPEG" in t.name)
    assert (target.measured, target.passed) == ("2.50x", False)
    again, _ = load(dump([run], "header"))
    assert again[0].scenarios is not None and again[0].scenarios.normalisation_cost == 2.5
    assert "112x112 dark-on-light JPEG at 400 req/s" in render_run(run)


def int8_cnn_run() -> ModelRun:
    """The measured `cnn` run with an int8 export served by default and float32 pinned beside it:
    int8's forward pass twice float32's, the service a fifth faster."""
    run = measured_cnn_run()
    ours = run.sweeps["ours"]
    run.sweeps["ours-float32"] = ours
    run.sweeps["ours"] = {
        workers: {
            c: Load(1.2 * load.requests_per_second, load.p50_ms, load.p99_ms / 1.2, 0)
            for c, load in by_c.items()
        }
        for workers, by_c in ours.items()
    }
    float32 = PrecisionRun(run.forward, run.answer, rss_mib=230.0)
    int8 = PrecisionRun({size: 2 * rate for size, rate in run.forward.items()}, run.answer, rss_mib=210.0)
    run.precision, run.precisions = "int8", {"float32": float32, "int8": int8}
    run.forward = int8.forward
    proof = {"accuracy": 0.9960, "negatives_flagged": 0.80, "mnist_c_mean": 0.9833, "uploads": 0.95}
    run.int8_proof = {
        "float32": proof,
        "int8": proof | {"accuracy": 0.9958},
        "verdict_agreement": 0.9995,
        "default": True,
        "reason": "the default: every rule within its limit",
    }
    return run


def test_the_combined_limit_is_float32_s_whatever_precision_is_served() -> None:
    run = int8_cnn_run()

    served, float32 = ratios(run), ratios(run, "ours-float32")

    assert served.forward_images_per_second == float32.forward_images_per_second == 4661
    assert served.ours_over_combined == pytest.approx(1.2 * float32.ours_over_combined)
    assert served.ours_over_peer == pytest.approx(1.2 * 1513 / 1058)


def test_each_precision_gets_its_targets_and_its_column_of_numbers() -> None:
    run = int8_cnn_run()

    text = render_run(load(dump([run], "# header"))[0][0])

    assert "`ours` serves int8" in text and "`ours-float32` the same service pinned to it" in text
    assert "| target |" not in text and "FAIL" not in text  # the goals live in docs/development.md
    found = {server: targets(run, ratios(run, server), server) for server in ("ours", "ours-float32")}
    combined = {s: [(t.measured, t.passed) for t in found[s] if "combined" in t.name] for s in found}
    assert combined == {"ours": [("0.61x", False)], "ours-float32": [("0.51x", False)]}
    assert "| ours / ours-float32 | 1.20x | 1.20x |" in text
    assert "| precision | float32 | int8 (served) |" in text
    assert "| test accuracy | 99.60 % | 99.58 % |" in text
    assert "| verdicts as float32's | 100.00 % | 99.95 % |" in text
    assert "| forward, images/s at batch 128 | 4,661 | 9,322 |" in text
    assert "| req/s at c=64 | 1,513 | 1,816 |" in text
    assert "| worker RSS after 200 predictions, MiB | 230 | 210 |" in text
    assert "- int8 by default: yes, the default: every rule within its limit" in text


def test_a_report_written_before_precisions_still_loads() -> None:
    written = dump([measured_cnn_run()], "# header").replace('"precisions": {}', '"absent": {}')

    runs, _ = load(written)

    assert runs[0].precisions == {} and "| precision |" not in render_run(runs[0])
