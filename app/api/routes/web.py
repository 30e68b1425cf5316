"""The web page: `/` serves index.html, `/static/...` its script and style sheet (no CDN, works offline)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parents[2] / "static"
INDEX_FILE = STATIC_DIR / "index.html"


def index() -> FileResponse:
    """The page: draw or upload a digit, browse the test set, see the model."""
    # no-cache: the browser revalidates (ETag), so a redeploy's page is picked up at once.
    return FileResponse(INDEX_FILE, media_type="text/html", headers={"Cache-Control": "no-cache"})


def mount_web(app: FastAPI) -> None:
    """Serve the page at `/` and its files at `/static`; call after the API routers are included."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_api_route("/", index, methods=["GET"], include_in_schema=False, response_class=FileResponse)
