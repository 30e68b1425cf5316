"""The web page in a real browser: Debian's headless Chromium, driven by Playwright, against uvicorn.

Digits are drawn with real input events (mouse on desktop, touch on the phone), so they go through
the page's own pointer handlers. Screenshots land in artifacts/screenshots/ for a person to look at.

    python -m pytest tests/app/live/test_web_page.py  # needs /usr/bin/chromium (apt-get install chromium)
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Response

from model_store.mnist_data import MnistSplit
from tests.app.live.conftest import DESKTOP
from tests.support.live_server import service_env, uvicorn_server
from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.browser

SCREENSHOTS = REPO_ROOT / "artifacts" / "screenshots"
PHONE: dict[str, Any] = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 3,
    "is_mobile": True,
    "has_touch": True,
}
READY_TIMEOUT_S = 120
INK = 128  # a test-image pixel brighter than this is drawn
DRAWN_DIGITS = range(20)

Stroke = tuple[float, float, float]  # y, x start, x end, in 28x28 pixel units


# ---- The server and the browser -------------------------------------------------------------


@pytest.fixture(scope="module")
def base_url(trained_store: Path, mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real uvicorn process serving the trained store; its log is shown if it fails to start."""
    env = service_env(trained_store, mnist_dir)
    with uvicorn_server(env, tmp_path_factory.mktemp("web") / "uvicorn.log") as server:
        yield server.url


@pytest.fixture(scope="module", autouse=True)
def screenshot_dir() -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)


@dataclass
class Watched:
    """A page, and everything that went wrong on it: console errors, exceptions, failed requests."""

    page: Page
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    error_responses: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        self.page.on("requestfailed", self._failed)
        self.page.on("response", self._response)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(f"{message.text} ({message.location.get('url')})")

    def _failed(self, request: Request) -> None:
        # A prediction replaced by a newer stroke is aborted on purpose; that is not a failure.
        if request.failure != "net::ERR_ABORTED" or "/predict" not in request.url:
            self.failed_requests.append(f"{request.method} {request.url}: {request.failure}")

    def _response(self, response: Response) -> None:
        if response.status >= 400:
            self.error_responses.append(f"{response.status} {response.url}")

    def problems(self) -> list[str]:
        return self.console_errors + self.page_errors + self.failed_requests + self.error_responses


def open_page(browser: Browser, url: str, device: dict[str, Any]) -> Iterator[Watched]:
    context = browser.new_context(**device)
    context.set_default_timeout(20_000)
    try:
        watched = Watched(context.new_page())
        watched.page.goto(url)
        watched.page.wait_for_selector("#sample[data-state=done]")
        yield watched
    finally:
        context.close()


@pytest.fixture
def desktop(browser: Browser, base_url: str) -> Iterator[Watched]:
    yield from open_page(browser, f"{base_url}/", DESKTOP)


@pytest.fixture
def phone(browser: Browser, base_url: str) -> Iterator[Watched]:
    yield from open_page(browser, f"{base_url}/", PHONE)


# ---- Drawing ---------------------------------------------------------------------------------


def digit_strokes(pixels: np.ndarray) -> list[Stroke]:
    """One horizontal stroke per run of inked pixels in each row, through the pixels' centres."""
    strokes = []
    for row, inked in enumerate(pixels > INK):
        edges = np.flatnonzero(np.diff(np.concatenate([[0], inked.astype(np.int8), [0]])))
        for start, stop in zip(edges[::2], edges[1::2], strict=True):
            strokes.append((row + 0.5, start + 0.5, stop - 0.5))
    return strokes


def pad_box(page: Page) -> tuple[float, float, float]:
    """Left, top and the size of one 28x28 pixel of the drawing pad, in viewport pixels."""
    pad = page.locator("#pad")
    pad.scroll_into_view_if_needed()
    box = pad.bounding_box()
    assert box is not None
    return box["x"], box["y"], box["width"] / 28


def draw_with_mouse(page: Page, strokes: list[Stroke]) -> None:
    left, top, cell = pad_box(page)
    for y, x0, x1 in strokes:
        page.mouse.move(left + x0 * cell, top + y * cell)
        page.mouse.down()
        page.mouse.move(left + x1 * cell, top + y * cell)
        page.mouse.up()


def draw_with_finger(page: Page, strokes: list[Stroke]) -> None:
    """Touch drags through the DevTools protocol: Playwright's touchscreen can only tap."""
    left, top, cell = pad_box(page)
    cdp = page.context.new_cdp_session(page)
    for y, x0, x1 in strokes:
        for kind, x in (("touchStart", x0), ("touchMove", (x0 + x1) / 2), ("touchMove", x1)):
            point = {"x": left + x * cell, "y": top + y * cell, "radiusX": 4, "radiusY": 4, "id": 1}
            cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [point]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    cdp.detach()


def shown_prediction(page: Page, strokes: int) -> int:
    """The digit shown once the answer for the drawing's last stroke has arrived."""
    page.wait_for_selector(f'#prediction[data-source="strokes:{strokes}"]')
    page.wait_for_selector("#result[data-state=done]")
    return int(page.text_content("#prediction") or "")


def png_file(path: Path, pixels: np.ndarray) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return path


def seen_image_size(page: Page) -> list[int]:
    page.wait_for_function("document.querySelector('#seen').complete")
    return page.eval_on_selector("#seen", "img => [img.naturalWidth, img.naturalHeight]")


# ---- Tests -----------------------------------------------------------------------------------


def test_page_loads_without_errors(desktop: Watched, base_url: str) -> None:
    page = desktop.page
    info = httpx.get(f"{base_url}/model").json()["metadata"]
    page.wait_for_selector("#model-version:not(:text('–'))")
    assert page.title().startswith("mnist-serve")
    assert page.text_content("#model-version") == f"{info['name']} v{info['version']}"
    assert page.text_content("#model-preset") == info["training"]["preset"]
    accuracy = f"{info['evaluation']['accuracy'] * 100:.2f} %"
    assert accuracy in (page.text_content("#model-accuracy") or "")
    assert "test accuracy" in (page.text_content("#model-badge") or "")

    # Both plots really load (they are lazy, so bring them into view first).
    plots = page.locator("#plots img")
    assert plots.count() == len(httpx.get(f"{base_url}/model").json()["plots"]) >= 3
    plots.last.scroll_into_view_if_needed()
    page.wait_for_function(
        "[...document.querySelectorAll('#plots img')].every(img => img.complete && img.naturalWidth > 0)"
    )
    # No horizontal scrolling on a desktop either.
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    page.screenshot(path=SCREENSHOTS / "desktop-load.png", full_page=True, animations="disabled")
    assert desktop.problems() == []


def test_drawn_test_digits_are_recognised(desktop: Watched, test_split: MnistSplit) -> None:
    page = desktop.page
    results = []
    for index in DRAWN_DIGITS:
        page.click("#clear")
        strokes = digit_strokes(test_split.images[index])
        draw_with_mouse(page, strokes)
        assert page.get_attribute("#pad", "data-strokes") == str(len(strokes))
        results.append((index, int(test_split.labels[index]), shown_prediction(page, len(strokes))))
    page.screenshot(path=SCREENSHOTS / "desktop-drawn.png", full_page=True, animations="disabled")

    right = sum(label == shown for _, label, shown in results)
    print(f"drawn test digits recognised: {right}/{len(results)}")
    assert right >= 16, f"only {right}/20 drawn digits recognised (index, label, shown): {results}"
    # The page shows the normalised 28x28 image the model saw, and the bars sum to ~100 %.
    assert seen_image_size(page) == [28, 28]
    assert page.locator("#bars li").count() == 10
    assert page.locator("#bars li.best").count() == 1
    assert desktop.page_errors == []
    assert desktop.console_errors == []


def test_drawing_shows_the_verdict_and_why(desktop: Watched, test_split: MnistSplit) -> None:
    page = desktop.page
    page.click("#clear")
    strokes = digit_strokes(test_split.images[128])
    draw_with_mouse(page, strokes)
    shown = shown_prediction(page, len(strokes))
    assert page.get_attribute("#confidence", "data-verdict") in ("digit", "unsure")
    page.wait_for_selector("#why-figure:not([hidden])")
    page.wait_for_function("document.querySelector('#why').complete")
    assert page.get_attribute("#why-figure", "data-digit") == str(shown)
    size = page.eval_on_selector("#why", "img => [img.naturalWidth, img.naturalHeight]")
    assert size == [224, 224]
    assert f"why {shown}" in (page.text_content("#why-caption") or "")
    page.screenshot(path=SCREENSHOTS / "desktop-why.png", full_page=True, animations="disabled")
    page.click("#clear")
    assert page.is_hidden("#why-figure")
    assert desktop.page_errors == [] and desktop.console_errors == []


def test_clear_resets_the_pad(desktop: Watched, test_split: MnistSplit) -> None:
    page = desktop.page
    strokes = digit_strokes(test_split.images[0])
    draw_with_mouse(page, strokes)
    shown_prediction(page, len(strokes))
    page.click("#clear")
    assert page.get_attribute("#pad", "data-strokes") == "0"
    assert page.text_content("#prediction") == "?"
    assert page.is_hidden("#seen-figure")
    # Every canvas pixel is black again.
    assert page.evaluate(
        """() => {
            const pad = document.querySelector('#pad');
            const data = pad.getContext('2d').getImageData(0, 0, pad.width, pad.height).data;
            return data.every((value, i) => i % 4 === 3 || value === 0);
        }"""
    )


def test_test_set_browser_shows_index_128_as_an_8(desktop: Watched, base_url: str) -> None:
    page = desktop.page
    page.fill("#test-index", "128")
    page.click("#test-form button[type=submit]")
    page.wait_for_selector("#sample[data-index='128'][data-state=done]")
    assert page.text_content("#sample-label") == "8"
    assert (page.text_content("#sample-prediction") or "").startswith("8 ")
    assert page.text_content("#sample-verdict") == "✓ correct"
    assert page.eval_on_selector("#sample-image", "img => img.naturalWidth") == 28 * 8
    page.locator("#testset").screenshot(path=SCREENSHOTS / "desktop-testset-128.png", animations="disabled")

    # "Random" shows another sample, consistent with the API's answer for that index.
    page.click("#random")
    page.wait_for_selector("#sample[data-state=done]")
    index = int(page.get_attribute("#sample", "data-index") or "")
    assert page.input_value("#test-index") == str(index)
    expected = httpx.get(f"{base_url}/test/{index}").json()
    assert page.text_content("#sample-label") == str(expected["label"])
    assert page.text_content("#sample-verdict") == ("✓ correct" if expected["correct"] else "✗ wrong")
    assert desktop.problems() == []


def test_upload_shows_the_prediction(desktop: Watched, test_split: MnistSplit, tmp_path: Path) -> None:
    page = desktop.page
    label = int(test_split.labels[7])
    upload = png_file(tmp_path / "test-7.png", test_split.images[7])
    with page.expect_file_chooser() as chooser:
        page.click("label[for=upload]")
    chooser.value.set_files(upload)
    page.wait_for_selector('#prediction[data-source="upload:test-7.png"]')
    page.wait_for_selector("#result[data-state=done]")
    assert page.text_content("#prediction") == str(label)
    assert page.is_visible("#upload-preview")
    assert seen_image_size(page) == [28, 28]
    # A native 28x28 MNIST image is used as it is.
    assert "Used as it is" in (page.text_content("#steps") or "")

    # A photo-like version (dark ink on light paper, larger) is normalised, and the steps say so.
    big = np.asarray(Image.fromarray(255 - test_split.images[7]).resize((140, 140), Image.Resampling.BICUBIC))
    paper = np.full((180, 160), 230, dtype=np.uint8)
    paper[25:165, 10:150] = np.minimum(big, 230)
    page.set_input_files("#upload", png_file(tmp_path / "paper.png", paper))
    page.wait_for_selector('#prediction[data-source="upload:paper.png"]')
    assert "inverted" in (page.text_content("#steps") or "")
    assert seen_image_size(page) == [28, 28]
    page.screenshot(path=SCREENSHOTS / "desktop-upload.png", animations="disabled")
    assert desktop.problems() == []


def test_server_error_and_slow_answer_show_a_message(
    desktop: Watched, base_url: str, test_split: MnistSplit
) -> None:
    page = desktop.page
    strokes = digit_strokes(test_split.images[1])
    body = json.dumps({"detail": "internal error; the service logged the details"})

    # The next prediction fails with a 500: the page says so and keeps working.
    page.route("**/predict*", lambda route: route.fulfill(status=500, body=body), times=1)
    draw_with_mouse(page, strokes[:1])
    page.wait_for_selector("#result[data-state=error]")
    message = page.text_content("#draw-status") or ""
    assert "500" in message and "internal error" in message
    page.screenshot(path=SCREENSHOTS / "desktop-server-error.png", animations="disabled")
    draw_with_mouse(page, strokes[1:])
    assert shown_prediction(page, len(strokes)) == test_split.labels[1]
    assert page.text_content("#draw-status") == ""

    # An answer that never comes: a timeout message, not a frozen page (1.5 s timeout for the test).
    page.goto(f"{base_url}/?timeout_ms=1500")
    page.wait_for_selector("#sample[data-state=done]")
    page.route("**/predict*", lambda route: None, times=1)  # never answered
    draw_with_mouse(page, strokes[:1])
    page.wait_for_selector("#draw-status.busy")
    page.wait_for_selector("#result[data-state=error]", timeout=5_000)
    assert "No answer after 1.5 s" in (page.text_content("#draw-status") or "")
    page.screenshot(path=SCREENSHOTS / "desktop-timeout.png", animations="disabled")
    draw_with_mouse(page, strokes[1:])
    assert shown_prediction(page, len(strokes)) == test_split.labels[1]
    # The test-set browser works meanwhile, too.
    page.click("#random")
    page.wait_for_selector("#sample[data-state=done]")
    assert desktop.page_errors == []


def test_phone_layout_and_touch_drawing(phone: Watched, test_split: MnistSplit) -> None:
    page = phone.page
    page.screenshot(path=SCREENSHOTS / "phone-load.png", full_page=True, animations="disabled")
    # One column, nothing wider than the screen, the pad fully on screen and a comfortable size.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    _, _, cell = pad_box(page)
    assert 250 <= cell * 28 <= 390
    scroll = page.evaluate("window.scrollY")

    strokes = digit_strokes(test_split.images[0])
    draw_with_finger(page, strokes)
    assert page.get_attribute("#pad", "data-strokes") == str(len(strokes))
    assert shown_prediction(page, len(strokes)) == test_split.labels[0]
    assert page.evaluate("window.scrollY") == scroll  # drawing does not scroll the page
    page.screenshot(path=SCREENSHOTS / "phone-drawn.png", full_page=True, animations="disabled")
    assert phone.problems() == []
