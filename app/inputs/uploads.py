"""Getting image bytes out of a request: a multipart field `file`, or the raw body."""

from __future__ import annotations

import asyncio

from fastapi import Request

from app.api.errors import ApiError
from app.inputs.imaging import (
    ImageError,
    ImageTooLargeError,
    Normalised,
    native_digit,
    normalise,
    open_image,
)
from app.inputs.multipart import FilePart, MultipartError, parse_multipart

UPLOAD_FIELD = "file"
RAW_CONTENT_TYPES = ("image/", "application/octet-stream")
# Images up to this many pixels are decoded on the event loop: cheaper than a thread hop.
INLINE_DECODE_PIXELS = 128 * 128


def content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_form_files(request: Request, max_files: int) -> list[FilePart]:
    """All files of a multipart body, or 422 naming the field we expected."""
    try:
        files, fields = parse_multipart(
            await request.body(), request.headers["content-type"], max_files=max_files, max_fields=max_files
        )
    except MultipartError as exc:
        raise ApiError(exc.status, str(exc)) from exc
    chosen = [part for part in files if part.name == UPLOAD_FIELD]
    if not chosen:
        others = sorted(({part.name for part in files} | set(fields)) - {UPLOAD_FIELD})
        hint = f"; the request had fields {others}" if others else ""
        raise ApiError(422, f"expected the image as a file in multipart form field '{UPLOAD_FIELD}'{hint}")
    return chosen


async def read_single_image(request: Request) -> tuple[bytes, str | None]:
    """The uploaded image's bytes and file name, from multipart or a raw image body."""
    kind = content_type(request)
    if kind == "multipart/form-data":
        files = await read_form_files(request, max_files=1)
        return files[0].data, files[0].filename
    if kind.startswith(RAW_CONTENT_TYPES) or not kind:
        body = await request.body()
        if not body:
            raise ApiError(400, "the request body is empty; send an image")
        return body, None
    raise ApiError(
        415,
        f"unsupported content type {kind!r}: send multipart/form-data with field '{UPLOAD_FIELD}' "
        "(curl -F file=@digit.png) or the raw image with an image/* content type",
    )


async def prepare_digit(data: bytes, max_pixels: int, label: str = "the image") -> Normalised:
    """Decode and normalise; small images on the loop, large ones in a worker thread."""
    native = native_digit(data)
    if native is not None:
        return native
    try:
        image = open_image(data, max_pixels)
        if image.width * image.height <= INLINE_DECODE_PIXELS:
            return normalise(image)
        return await asyncio.to_thread(normalise, image)
    except ImageTooLargeError as exc:
        raise ApiError(413, f"{label}: {exc}") from exc
    except ImageError as exc:
        raise ApiError(400, f"{label}: {exc}") from exc
