"""The page's monitoring panel and feedback buttons in headless Chromium, against a real uvicorn.

Drift is shown by a server without the prediction log too, from its metrics; feedback needs the
log's `/feedback` and `/monitoring`, and a server without them gets no buttons.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page

from model_store.mnist_data import MnistSplit
from tests.app.conftest import encode
from tests.app.live.conftest import DESKTOP
from tests.support.live_server import service_env, uvicorn_server
from training.negatives import draw

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def unlogged_url(
    trained_store: Path, mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A server without the prediction log: drift from its metrics, no feedback."""
    env = service_env(trained_store, mnist_dir, drift_interval_seconds="0.2")
    with uvicorn_server(env, tmp_path_factory.mktemp("monitoring") / "uvicorn.log") as server:
        yield server.url


@pytest.fixture(scope="module")
def logged_url(
    trained_store: Path, mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A server with the prediction log on a SQLite file of its own."""
    folder = tmp_path_factory.mktemp("logged")
    env = service_env(
        trained_store,
        mnist_dir,
        prediction_log="on",
        database_url=f"sqlite:///{folder / 'log.db'}",
        drift_interval_seconds="0.2",
    )
    with uvicorn_server(env, folder / "uvicorn.log") as server:
        yield server.url


@pytest.fixture(params=["unlogged", "logged"])
def base_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def page(browser: Browser, base_url: str) -> Iterator[tuple[Page, list[str]]]:
    context = browser.new_context(**DESKTOP)
    context.set_default_timeout(30_000)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda message: record_console_error(message, problems))
    page.goto(f"{base_url}/?monitor_ms=300")
    try:
        yield page, problems
    finally:
        context.close()


def record_console_error(message: ConsoleMessage, problems: list[str]) -> None:
    if message.type == "error":
        problems.append(message.text)


def predict_batch(base_url: str, images: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, images)
    response = httpx.post(
        f"{base_url}/predict/batch",
        content=buffer.getvalue(),
        headers={"Content-Type": "application/x-npy"},
        timeout=60,
    )
    assert response.status_code == 200, response.text


def test_panel_shows_drift_cross_its_threshold(
    page: tuple[Page, list[str]], base_url: str, test_split: MnistSplit
) -> None:
    shown, problems = page
    drift_cell = shown.locator('#monitoring-rows tr[data-version="1"] td:last-child')
    drift_cell.wait_for()
    # /monitoring gives the window's size; /metrics (the source without the log) does not.
    assert drift_cell.inner_text() in ("waiting for 200 inputs", "waiting for a full window of inputs")
    rng = np.random.default_rng(5)
    predict_batch(base_url, test_split.images[rng.choice(len(test_split.images), 200, replace=False)])
    shown.wait_for_selector('#monitoring-rows tr[data-version="1"] td[data-drift="calm"]:has-text("/")')
    shown.wait_for_selector('#drift-chart polyline[data-version="1"]', state="attached")

    predict_batch(base_url, np.concatenate(list(draw(2, 15, test_split.images).values())))
    shown.wait_for_selector('#monitoring-rows tr[data-version="1"] td[data-drift="drifting"]')
    statistic, threshold = (float(part) for part in drift_cell.inner_text().split(" (")[0].split(" / "))
    assert statistic > threshold
    logged = "/monitoring" in httpx.get(f"{base_url}/openapi.json").json()["paths"]
    source = shown.locator("#monitoring").get_attribute("data-source")
    assert source == ("monitoring" if logged else "metrics")
    if logged:  # the panel's drift came from /monitoring's `drift` field
        (version,) = [v for v in httpx.get(f"{base_url}/monitoring").json()["versions"] if v["version"] == 1]
        assert version["drift"]["drifting"] and version["drift"]["window"] == 200
    assert problems == []


def upload_a_seven(shown: Page, test_split: MnistSplit, folder: Path) -> None:
    picture = folder / "seven.png"
    picture.write_bytes(encode(test_split.images[0]))  # a 7
    shown.set_input_files("#upload", str(picture))
    shown.wait_for_selector('#result[data-state="done"]')


@pytest.mark.parametrize("base_url", ["unlogged"], indirect=True)
def test_a_server_without_the_log_offers_no_feedback(
    page: tuple[Page, list[str]], test_split: MnistSplit, tmp_path: Path
) -> None:
    shown, problems = page
    upload_a_seven(shown, test_split, tmp_path)
    shown.wait_for_selector('#monitoring[data-source="metrics"]', state="attached")
    shown.wait_for_selector("#why-figure:not([hidden])")  # the page is done with this answer
    assert shown.locator("#feedback").is_hidden()
    assert problems == []


@pytest.mark.parametrize("base_url", ["logged"], indirect=True)
def test_feedback_on_an_answer_reaches_the_monitoring_panel(
    page: tuple[Page, list[str]], base_url: str, test_split: MnistSplit, tmp_path: Path
) -> None:
    shown, problems = page
    upload_a_seven(shown, test_split, tmp_path)
    shown.wait_for_selector("#feedback:not([hidden])")
    shown.click('#feedback-labels button[data-label="3"]')  # says it was a 3: the answer was wrong
    status = shown.locator("#feedback-status")
    shown.wait_for_selector('#feedback[data-state="sent"]')
    assert "recorded as a 3, the answer 7 was wrong" in status.inner_text()
    shown.click("#feedback-right")  # changes its mind: replaces the feedback
    shown.wait_for_selector('#feedback-status:has-text("replacing your earlier feedback")')

    monitored = httpx.get(f"{base_url}/monitoring").json()
    (version,) = [v for v in monitored["versions"] if v["version"] == 1]
    assert version["feedback"] == 1 and version["accuracy"] == 1.0
    row = shown.locator('#monitoring-rows tr[data-version="1"]')
    shown.wait_for_selector('#monitoring[data-source="monitoring"]')
    shown.wait_for_selector('#monitoring-rows tr[data-version="1"] td:nth-child(4):has-text("100.0 %")')
    assert row.locator("td:nth-child(3)").inner_text() == "1"
    shown.wait_for_selector("#accuracy-chart rect.bar", state="attached")
    assert problems == []
