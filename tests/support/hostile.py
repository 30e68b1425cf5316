"""Hostile and odd requests, built byte by byte: files whose headers lie, odd formats and colour modes,
and the checks every answer to them must pass (a JSON error, the service still serving)."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from model_store.mnist_data import MnistSplit
from tests.app.conftest import encode, paper_scan

# Test images the small trained CNN recognises with > 0.99 confidence, raw and as a paper scan;
# none of them looks like another digit when rotated or mirrored.
SEVEN, TWO, THREE, FOUR = 0, 1, 32, 4
BOMB_SIDE = 20_000


@dataclass
class Call:
    path: str = "/predict"
    method: str = "POST"
    files: Any = None
    data: dict[str, str] | None = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def send(api: TestClient, call: Call) -> httpx.Response:
    return api.request(
        call.method, call.path, files=call.files, data=call.data, content=call.content, headers=call.headers
    )


def error_detail(response: httpx.Response) -> str:
    """The body must be JSON `{"detail": "<a sentence>"}`."""
    assert response.headers["content-type"].startswith("application/json"), response.headers
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail, response.text
    return detail


def assert_still_serving(api: TestClient, images: MnistSplit) -> None:
    response = api.post("/predict", files={"file": ("seven.png", encode(images.images[SEVEN]), "image/png")})
    assert response.status_code == 200 and response.json()["prediction"] == 7, response.text


def save(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def scan(images: MnistSplit, index: int) -> Image.Image:
    """Test digit `index` as a photographed paper scan: dark ink on light grey, 142 x 122 pixels."""
    return Image.fromarray(paper_scan(images.images[index]))


def upload(data: bytes, name: str = "digit.png", kind: str = "image/png") -> dict[str, Any]:
    return {"file": (name, data, kind)}


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims another size: a decompression bomb without the bytes."""
    data = bytearray(save(Image.new("L", (8, 8)), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def jpeg_claiming(width: int, height: int) -> bytes:
    data = bytearray(save(Image.new("L", (8, 8)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_claiming(width: int, height: int) -> bytes:
    data = bytearray(save(Image.new("P", (8, 8)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def npy(array: np.ndarray, **options: Any) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, **options)
    return buffer.getvalue()


def npy_claiming(shape: tuple[int, ...], pixels: bytes) -> bytes:
    """A .npy whose header claims `shape` but whose body holds only `pixels`."""
    header = f"{{'descr': '|u1', 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * (127 - 10 - len(header)) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + pixels


def animated_gif(images: MnistSplit, first: int, others: list[int]) -> bytes:
    frames = [scan(images, index).convert("P") for index in (first, *others)]
    return save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def batch_with(images: MnistSplit, bad: bytes, at: int, count: int = 8) -> list[tuple[str, Any]]:
    files = [("file", (f"{i}.png", encode(images.images[i]), "image/png")) for i in range(count)]
    files.insert(at, ("file", ("bad.png", bad, "image/png")))
    return files


def truncated(data: bytes, keep: float) -> bytes:
    return data[: int(len(data) * keep)]


def sixteen_bit(images: MnistSplit, index: int) -> bytes:
    pixels = paper_scan(images.images[index]).astype(np.uint16) * 257
    image = Image.fromarray(pixels)
    assert image.mode.startswith("I;16")
    return save(image, "PNG")


def transparent_background(images: MnistSplit, index: int) -> bytes:
    """Black ink whose alpha is the digit, on a fully transparent 100 x 100 canvas (a canvas export)."""
    ink = np.asarray(Image.fromarray(images.images[index]).resize((100, 100), Image.Resampling.BICUBIC))
    rgba = np.zeros((100, 100, 4), dtype=np.uint8)
    rgba[..., 3] = ink
    return save(Image.fromarray(rgba, "RGBA"), "PNG")


def palette_with_transparency(images: MnistSplit, index: int) -> bytes:
    """White digit on a transparent palette entry: only the alpha channel tells ink from paper."""
    image = Image.fromarray(images.images[index]).convert("P")
    return save(image, "PNG", transparency=0)


Builder = Callable[[MnistSplit], Call]
