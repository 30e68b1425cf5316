"""An uploaded image out of a request, as a 28x28 digit: read, then decoded and normalised on a
worker thread.

The multipart form is parsed by FastAPI (Starlette's parser, python-multipart) from the routes'
`File` parameters, within each route's `form_limits`; the dependencies here refuse what the form
cannot be (another content type, no file in field `file`) before those parameters are read, so a
client learns which field we expected rather than that a value failed validation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, TypedDict

from fastapi import Depends, File, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.datastructures import UploadFile as FormFile  # what the parser makes; FastAPI's subclasses it

from app.api.errors import ApiError
from app.inputs.imaging import ImageError, ImageTooLargeError, decode
from app.inputs.normalisation import Normalised, normalise_decoded

UPLOAD_FIELD = "file"
MULTIPART = "multipart/form-data"
RAW_IMAGE_TYPES = ("image/", "application/octet-stream")
# A batch body that is not multipart is an array; no content type at all is read as one too.
ARRAY_TYPES = ("application/x-npy", "application/octet-stream", "")
# Beside the files, a form may carry as many other fields as files (a client's notes); a text
# field is bounded as Starlette bounds it.
MAX_FIELD_BYTES = 1024 * 1024


def content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


class FormLimits(TypedDict, total=False):
    """The keys of FastAPI's `form_limits`."""

    max_files: int
    max_fields: int
    max_part_size: int


def form_limits(max_files: int) -> FormLimits:
    """FastAPI's `form_limits` for a route taking up to `max_files` files."""
    return {"max_files": max_files, "max_fields": max_files, "max_part_size": MAX_FIELD_BYTES}


def _require_file_field(form: FormData) -> None:
    """422 unless field `file` holds files, naming the fields the request had instead."""
    values = form.getlist(UPLOAD_FIELD)
    if values and all(isinstance(value, FormFile) for value in values):
        return
    others = sorted(set(form.keys()) - {UPLOAD_FIELD})
    hint = f"; the request had fields {others}" if others else ""
    raise ApiError(422, f"expected the image as a file in multipart form field '{UPLOAD_FIELD}'{hint}")


async def image_body_kind(request: Request) -> str:
    """`/predict`'s accepted bodies: a multipart form with field `file`, or the raw image."""
    kind = content_type(request)
    if kind == MULTIPART:
        _require_file_field(await request.form())  # parsed already, within the route's limits
    elif not (kind.startswith(RAW_IMAGE_TYPES) or not kind):
        raise ApiError(
            415,
            f"unsupported content type {kind!r}: send {MULTIPART} with field '{UPLOAD_FIELD}' "
            "(curl -F file=@digit.png) or the raw image with an image/* content type",
        )
    return kind


async def batch_body_kind(request: Request) -> str:
    """`/predict/batch`'s accepted bodies: a multipart form with fields `file`, or an array."""
    kind = content_type(request)
    if kind == MULTIPART:
        _require_file_field(await request.form())
    elif kind not in ARRAY_TYPES:
        raise ApiError(
            415,
            f"unsupported content type {kind!r}: send {MULTIPART} with fields '{UPLOAD_FIELD}', "
            "or a .npy array or raw 28x28 uint8 bytes as application/x-npy or application/octet-stream",
        )
    return kind


IMAGE_FILE = (
    "the digit image: PNG, JPEG, BMP, GIF, WebP or TIFF (or send the file itself as the body, "
    "with an image/* content type)"
)
IMAGE_FILES = "the digit images, one file each, answered in this order"


async def single_image(
    request: Request,
    kind: Annotated[str, Depends(image_body_kind)],
    file: Annotated[UploadFile | None, File(description=IMAGE_FILE)] = None,
) -> bytes:
    """The uploaded image's bytes: the multipart file, else the raw body (400 when empty)."""
    if kind == MULTIPART:
        # FastAPI passes an empty file as None; the form has it, and it gets the empty image's 400.
        return b"" if file is None else await file.read()
    body = await request.body()
    if not body:
        raise ApiError(400, "the request body is empty; send an image")
    return body


async def image_files(
    request: Request,
    kind: Annotated[str, Depends(batch_body_kind)],
    file: Annotated[list[UploadFile] | None, File(description=IMAGE_FILES)] = None,
) -> list[FormFile] | None:
    """A batch's files, in request order; None when the body is an array (the route reads it).
    Taken from the form itself: FastAPI leaves empty files out of `file`, and file i must stay
    file i in the answer (an empty one gets its own 400)."""
    if kind != MULTIPART:
        return None
    return [upload for upload in (await request.form()).getlist(UPLOAD_FIELD) if isinstance(upload, FormFile)]


SingleImage = Annotated[bytes, Depends(single_image)]
ImageFiles = Annotated[list[FormFile] | None, Depends(image_files)]


def decode_and_normalise(data: bytes, max_pixels: int) -> Normalised:
    """An upload's bytes as the 28x28 digit the model sees: decoded, then normalised."""
    decoded = decode(data, max_pixels)
    return normalise_decoded(decoded.image, original_size=decoded.original_size)


def checked_digit(data: bytes, max_pixels: int, label: str) -> Normalised:
    """`decode_and_normalise`, refusing with 413 over the pixel limit and 400 for anything we
    cannot read, the message naming `label`."""
    try:
        return decode_and_normalise(data, max_pixels)
    except ImageTooLargeError as exc:
        raise ApiError(413, f"{label}: {exc}") from exc
    except ImageError as exc:
        raise ApiError(400, f"{label}: {exc}") from exc


async def prepare_digit(data: bytes, max_pixels: int, label: str = "the image") -> Normalised:
    """One upload, decoded and normalised on a worker thread: a photo takes milliseconds, and even
    a small PNG's decoding is work the event loop, serving every other request, should not do."""
    return await run_in_threadpool(checked_digit, data, max_pixels, label)


def _checked_digits(uploads: Sequence[tuple[bytes, str]], max_pixels: int) -> list[Normalised]:
    return [checked_digit(data, max_pixels, label) for data, label in uploads]


async def prepare_digits(uploads: Sequence[tuple[bytes, str]], max_pixels: int) -> list[Normalised]:
    """A batch's uploads (bytes, the label its errors name), in order, on one worker thread."""
    return await run_in_threadpool(_checked_digits, uploads, max_pixels)
