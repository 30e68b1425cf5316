"""The web page during a canary: it says which version answered and lets the user pick one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from model_store.metadata import METADATA_FILE
from model_store.mnist_data import MnistSplit
from model_store.pins import write_routing
from model_store.store import ModelStore
from tests.app.conftest import encode, publish_copy
from tests.app.live.conftest import DESKTOP
from tests.support.live_server import service_env, uvicorn_server

pytestmark = pytest.mark.browser


@pytest.fixture
def canary_page(
    two_versions: Path,
    mnist_dir: Path,
    tmp_path: Path,
    browser: object,
) -> Iterator[Page]:
    write_routing(ModelStore(two_versions), "canary", 1, 10.0, "test")
    env = service_env(two_versions, mnist_dir)
    with uvicorn_server(env, tmp_path / "uvicorn.log") as server:
        context = browser.new_context(**DESKTOP)  # type: ignore[attr-defined]
        page = context.new_page()
        page.goto(server.url)
        yield page
        context.close()


def test_the_user_picks_the_version_that_answers(
    canary_page: Page, tmp_path: Path, test_split: MnistSplit
) -> None:
    page = canary_page
    digit = tmp_path / "digit.png"
    digit.write_bytes(encode(test_split.images[0]))
    expect(page.locator("#version-choice")).to_be_visible()
    for version in ("1", "2"):
        page.select_option("#version-pick", version)
        page.set_input_files("#upload", str(digit))
        expect(page.locator("#answered-by")).to_have_text(f"Answered by model version {version}.")


def mark_quick(store_root: Path, version: int) -> None:
    """Rewrite `version`'s metadata as a quick first model's (`mnist-train --quick`)."""
    store = ModelStore(store_root)
    metadata = store.read_metadata(version)
    training = metadata.training.model_copy(update={"quick": True})
    path = store.version_path(version) / METADATA_FILE
    path.write_text(metadata.model_copy(update={"training": training}).model_dump_json(indent=2))


@pytest.mark.slow
def test_the_page_says_a_quick_model_serves_until_the_full_one_replaces_it(
    private_store: Path, mnist_dir: Path, tmp_path: Path, browser: object
) -> None:
    mark_quick(private_store, 1)
    env = service_env(private_store, mnist_dir, reload_poll_seconds="0.2")
    with uvicorn_server(env, tmp_path / "uvicorn.log") as server:
        context = browser.new_context(**DESKTOP)  # type: ignore[attr-defined]
        page = context.new_page()
        page.goto(server.url)
        note = page.locator("#model-quick")
        expect(note).to_be_visible()
        expect(note).to_contain_text("A quick model (")
        expect(note).to_contain_text("the full model is training")
        expect(page.locator("#model-badge")).to_contain_text("(quick)")

        full = publish_copy(private_store, quick=False)
        # The page looks again on its own while it shows a quick model.
        expect(page.locator("#model-badge")).to_contain_text(f"v{full} ", timeout=30_000)
        expect(note).to_be_hidden()
        context.close()
    assert (
        f"now serving mnist version {full} (cnn, full) in place of version 1 (cnn, quick)"
        in (tmp_path / "uvicorn.log").read_text()
    )
