"""An uploaded image out of a request, as the 28x28 digit the model sees, in one pass: the body
read (a multipart field `file`, or the raw image), decoded (`app.inputs.imaging`), normalised
(`model_store.normalisation`), the last two on a worker thread."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from app.api.errors import ApiError
from app.inputs.imaging import ImageError, ImageTooLargeError, decode, read_native_png
from app.inputs.multipart import FilePart, MultipartError, parse_multipart
from model_store.normalisation import Normalised, normalise_decoded, normalise_native

UPLOAD_FIELD = "file"
MULTIPART = "multipart/form-data"
RAW_IMAGE_TYPES = ("image/", "application/octet-stream")
# A PNG in MNIST's own format is a few hundred bytes; up to this size its read (a chunk walk and a
# 28x28 decode) takes microseconds, cheaper than the hop to a worker thread and back.
NATIVE_INLINE_BYTES = 64 * 1024


@dataclass(frozen=True)
class UploadedDigit:
    """One uploaded file's digit, and the file's name (None for a raw body)."""

    filename: str | None
    digit: Normalised


def content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_form_files(request: Request, max_files: int) -> list[FilePart]:
    """All files of field `file` in a multipart body, or 422 naming the field we expected."""
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


def native_digit(data: bytes) -> Normalised | None:
    """The digit of a small PNG in MNIST's own format, else None: bounded work, microseconds."""
    if len(data) > NATIVE_INLINE_BYTES:
        return None
    pixels = read_native_png(data)
    return None if pixels is None else normalise_native(pixels)


def decode_and_normalise(data: bytes, max_pixels: int, label: str) -> Normalised:
    """An upload's bytes as the 28x28 digit: decoded, then normalised; 413 over the pixel limit
    and 400 for anything we cannot read, the message naming `label`. Milliseconds for a photo."""
    try:
        decoded = decode(data, max_pixels)
    except ImageTooLargeError as exc:
        raise ApiError(413, f"{label}: {exc}") from exc
    except ImageError as exc:
        raise ApiError(400, f"{label}: {exc}") from exc
    return normalise_decoded(decoded.image, original_size=decoded.original_size)


def _decode_all(files: Sequence[FilePart], max_pixels: int) -> list[UploadedDigit]:
    digits = []
    for i, part in enumerate(files):
        digit = native_digit(part.data)
        if digit is None:
            digit = decode_and_normalise(part.data, max_pixels, f"file {i} ({part.filename})")
        digits.append(UploadedDigit(part.filename, digit))
    return digits


async def uploaded_digit(request: Request, max_pixels: int) -> Normalised:
    """The digit of `/predict`'s upload: multipart field `file`, or the raw image body. Decoding a
    photo takes milliseconds, so it happens on a worker thread, never on the event loop; only a
    small PNG in MNIST's own format is read in place."""
    kind = content_type(request)
    if kind == MULTIPART:
        data = (await read_form_files(request, max_files=1))[0].data
    elif kind.startswith(RAW_IMAGE_TYPES) or not kind:
        data = await request.body()
        if not data:
            raise ApiError(400, "the request body is empty; send an image")
    else:
        raise ApiError(
            415,
            f"unsupported content type {kind!r}: send {MULTIPART} with field '{UPLOAD_FIELD}' "
            "(curl -F file=@digit.png) or the raw image with an image/* content type",
        )
    return await digit_of_bytes(data, max_pixels)


async def uploaded_digits(request: Request, max_files: int, max_pixels: int) -> list[UploadedDigit]:
    """A multipart batch's digits in request order, all decoded on one worker thread."""
    files = await read_form_files(request, max_files)
    return await run_in_threadpool(_decode_all, files, max_pixels)


async def digit_of_bytes(data: bytes, max_pixels: int) -> Normalised:
    """The digit of an image file already read: a small native PNG in place, else on a worker
    thread."""
    native = native_digit(data)
    if native is not None:
        return native
    return await run_in_threadpool(decode_and_normalise, data, max_pixels, "the image")
