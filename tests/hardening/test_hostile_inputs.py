"""Hostile and odd inputs, built here: every one gets a clear 4xx JSON error, or the right digit when
it is a valid image; never a 500, and the next good request still answers correctly.

tests/app/api/test_bad_input.py already covers the plain cases (text, random bytes, a truncated PNG,
an empty file, a real 20,000 x 20,000 PNG, /test/-1 and friends, one bad file in a two-file batch);
this corpus goes past them: formats and colour modes, lying headers, multipart abuse, mutations.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from app.config import Settings
from app.main import create_app
from model_store.mnist_data import MnistSplit, load_split
from tests.app.conftest import encode, paper_scan

# Test images the small trained CNN recognises with > 0.99 confidence, raw and as a paper scan;
# none of them looks like another digit when rotated or mirrored.
SEVEN, TWO, THREE, FOUR = 0, 1, 32, 4
BOMB_SIDE = 20_000


@pytest.fixture(scope="module")
def digits(mnist_dir: Path) -> MnistSplit:
    return load_split(mnist_dir, "test")


@pytest.fixture(scope="module")
def api(trained_store: Path, mnist_dir: Path) -> Iterator[TestClient]:
    """The app with the default limits, spelled out so that MNIST_* variables cannot change them."""
    settings = Settings(
        model_store=trained_store,
        data_dir=mnist_dir,
        reload_poll_seconds=0,
        max_upload_bytes=4 * 1024 * 1024,
        max_image_pixels=16_000_000,
        max_batch_images=256,
        max_array_images=10_000,
        max_random_count=100,
    )
    with TestClient(create_app(settings)) as client:
        yield client


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


# ---------------------------------------------------------------------------------------- builders


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


Builder = Callable[[MnistSplit], Call]
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="28" height="28"><text x="6" y="22">7</text></svg>'

# name -> (request, accepted statuses, words the detail must contain)
HOSTILE: dict[str, tuple[Builder, set[int], str]] = {
    # Empty and random bodies, on every way in.
    "zero bytes, raw image/jpeg body": (
        lambda _: Call(content=b"", headers={"Content-Type": "image/jpeg"}),
        {400},
        "empty",
    ),
    "zero bytes, one file of a batch": (
        lambda d: Call("/predict/batch", files=batch_with(d, b"", at=3)),
        {400},
        "file 3",
    ),
    "random bytes, raw image/jpeg body": (
        lambda _: Call(
            content=np.random.default_rng(1).bytes(10_000), headers={"Content-Type": "image/jpeg"}
        ),
        {400},
        "not a recognised image",
    ),
    "random bytes after a PNG signature": (
        lambda _: Call(files=upload(b"\x89PNG\r\n\x1a\n" + np.random.default_rng(2).bytes(2000))),
        {400},
        "",
    ),
    # Truncation at every depth: inside the signature, the header, the pixel data.
    "png cut inside the signature": (lambda d: Call(files=upload(encode(d.images[SEVEN])[:5])), {400}, ""),
    "png cut after the header": (
        lambda d: Call(files=upload(save(scan(d, SEVEN), "PNG")[:40])),
        {400},
        "corrupt or truncated",
    ),
    "png cut in the middle of its pixels": (
        lambda d: Call(files=upload(truncated(save(scan(d, SEVEN), "PNG"), 0.5))),
        {400},
        "corrupt or truncated",
    ),
    "jpeg cut after its header": (
        lambda d: Call(files=upload(save(scan(d, SEVEN), "JPEG")[:400], "d.jpg", "image/jpeg")),
        {400},
        "corrupt or truncated",
    ),
    "jpeg cut in half": (
        lambda d: Call(files=upload(truncated(save(scan(d, SEVEN), "JPEG"), 0.5), "d.jpg", "image/jpeg")),
        {400},
        "corrupt or truncated",
    ),
    "gif cut in half": (
        lambda d: Call(
            files=upload(truncated(save(scan(d, SEVEN).convert("P"), "GIF"), 0.5), "d.gif", "image/gif")
        ),
        {400},
        "",
    ),
    # Not images at all, under image names and types.
    "text file named .png": (
        lambda _: Call(files=upload(b"just some notes\n" * 20, "digit.png")),
        {400},
        "not a recognised image",
    ),
    "svg upload": (
        lambda _: Call(files=upload(SVG, "seven.svg", "image/svg+xml")),
        {400},
        "not a recognised image",
    ),
    "svg raw body": (
        lambda _: Call(content=SVG, headers={"Content-Type": "image/svg+xml"}),
        {400},
        "not a recognised image",
    ),
    "pdf raw body": (
        lambda _: Call(
            content=b"%PDF-1.4\n%\xe2\xe3\n1 0 obj<<>>endobj\n", headers={"Content-Type": "image/png"}
        ),
        {400},
        "not a recognised image",
    ),
    # Decompression bombs: headers claiming 20,000 x 20,000 pixels, refused before decoding.
    "png header claiming 20000x20000": (
        lambda _: Call(files=upload(png_claiming(BOMB_SIDE, BOMB_SIDE))),
        {413},
        "",
    ),
    "jpeg header claiming 20000x20000": (
        lambda _: Call(files=upload(jpeg_claiming(BOMB_SIDE, BOMB_SIDE), "bomb.jpg", "image/jpeg")),
        {413},
        "",
    ),
    "gif header claiming 20000x20000": (
        lambda _: Call(files=upload(gif_claiming(BOMB_SIDE, BOMB_SIDE), "bomb.gif", "image/gif")),
        {413},
        "",
    ),
    "real png just over the pixel limit": (
        lambda _: Call(files=upload(save(Image.new("L", (5000, 3201)), "PNG", optimize=True))),
        {413},
        "5000x3201",
    ),
    "bomb among good files in a batch": (
        lambda d: Call("/predict/batch", files=batch_with(d, png_claiming(BOMB_SIDE, BOMB_SIDE), at=5)),
        {413},
        "file 5",
    ),
    # Multipart abuse.
    "300 file parts to /predict/batch": (
        lambda d: Call(
            "/predict/batch", files=[("file", (f"{i}.png", b"x", "image/png")) for i in range(300)]
        ),
        {413},
        "at most 256 files",
    ),
    "300 file parts to /predict": (
        lambda d: Call(files=[("file", (f"{i}.png", b"x", "image/png")) for i in range(300)]),
        {413},
        "at most 1 files",
    ),
    "500 text fields beside the file": (
        lambda d: Call(files=upload(encode(d.images[SEVEN])), data={f"note{i}": "x" for i in range(500)}),
        {413},
        "other form fields",
    ),
    "2 MB text field beside the file": (
        lambda d: Call(files=upload(encode(d.images[SEVEN])), data={"note": "x" * 2_000_000}),
        {413},
        "maximum size",
    ),
    "5 MB file part, over the body limit": (
        lambda _: Call(files=upload(np.random.default_rng(3).bytes(5 * 1024 * 1024))),
        {413},
        "larger than the limit",
    ),
    "multipart without a boundary": (
        lambda _: Call(content=b"--x\r\n\r\n", headers={"Content-Type": "multipart/form-data"}),
        {400},
        "boundary",
    ),
    "multipart that is really json": (
        lambda _: Call(content=b'{"file": 1}', headers={"Content-Type": "multipart/form-data; boundary=b"}),
        {400},
        "malformed multipart",
    ),
    "multipart cut off inside the file part": (
        lambda d: Call(
            content=b'--b\r\nContent-Disposition: form-data; name="file"; filename="d.png"\r\n\r\n'
            + encode(d.images[SEVEN])[:50],
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        ),
        {400, 422},
        "",
    ),
    "file sent as a text field": (
        lambda _: Call(
            content=b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\nhello\r\n--b--\r\n',
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        ),
        {422},
        "'file'",
    ),
    "wrong field name in a batch": (
        lambda d: Call("/predict/batch", files=[("files", ("a.png", encode(d.images[SEVEN]), "image/png"))]),
        {422},
        "'files'",
    ),
    "field name differing in case": (
        lambda d: Call(files={"File": ("a.png", encode(d.images[SEVEN]), "image/png")}),
        {422},
        "'File'",
    ),
    # Content types that are not images.
    "json to /predict": (
        lambda _: Call(content=b'{"pixels": [0]}', headers={"Content-Type": "application/json"}),
        {415},
        "",
    ),
    "form-urlencoded to /predict": (lambda _: Call(data={"file": "digit.png"}), {415}, "multipart/form-data"),
    "json to /predict/batch": (
        lambda _: Call(
            "/predict/batch", content=b"[" + b"0," * 783 + b"0]", headers={"Content-Type": "application/json"}
        ),
        {415},
        "application/x-npy",
    ),
    "784 bytes of text to /predict/batch": (
        lambda _: Call("/predict/batch", content=b"a" * 784, headers={"Content-Type": "text/plain"}),
        {415},
        "",
    ),
    "multipart body sent without a content type": (
        lambda d: Call(
            content=b'--b\r\nContent-Disposition: form-data; name="file"; filename="d.png"\r\n\r\n'
            + encode(d.images[SEVEN])
            + b"\r\n--b--\r\n",
        ),
        {400},
        "not a recognised image",
    ),
    # Binary arrays that lie.
    "npy header claiming a billion images": (
        lambda d: Call(
            "/predict/batch",
            content=npy_claiming((1_000_000_000, 28, 28), d.images[SEVEN].tobytes()),
            headers={"Content-Type": "application/x-npy"},
        ),
        {413},
        "limit is 10000",
    ),
    "npy header claiming more images than it holds": (
        lambda d: Call(
            "/predict/batch",
            content=npy_claiming((5, 28, 28), d.images[SEVEN].tobytes()),
            headers={"Content-Type": "application/x-npy"},
        ),
        {400},
        "promises",
    ),
    "npy with a negative image count": (
        lambda d: Call(
            "/predict/batch",
            content=npy_claiming((-1, 28, 28), d.images[SEVEN].tobytes()),
            headers={"Content-Type": "application/x-npy"},
        ),
        {400},
        "shape",
    ),
    "npy of python objects (pickle)": (
        lambda _: Call(
            "/predict/batch",
            content=npy(np.zeros((2, 28, 28), dtype=object), allow_pickle=True),
            headers={"Content-Type": "application/x-npy"},
        ),
        {400},
        "dtype",
    ),
    "npy magic then garbage": (
        lambda _: Call(
            "/predict/batch",
            content=b"\x93NUMPY" + b"\xff" * 100,
            headers={"Content-Type": "application/x-npy"},
        ),
        {400},
        "not a readable .npy",
    ),
    # Test-set indices and parameters beyond those in test_bad_input.py.
    "/test/-10000": (lambda _: Call("/test/-10000", "GET"), {404}, "out of range"),
    "/test/99999999999999999999": (
        lambda _: Call("/test/99999999999999999999", "GET"),
        {404},
        "out of range",
    ),
    "/test/seven": (lambda _: Call("/test/seven", "GET"), {422}, "path parameter index"),
    "/test/1e3": (lambda _: Call("/test/1e3", "GET"), {422}, "path parameter index"),
    "/test/1.5": (lambda _: Call("/test/1.5", "GET"), {422}, "path parameter index"),
    "/test/%20": (lambda _: Call("/test/%20", "GET"), {422}, "path parameter index"),
    "/test/random?seed=-1": (lambda _: Call("/test/random?seed=-1", "GET"), {422}, "seed"),
    "/test/random?count=1e3": (lambda _: Call("/test/random?count=1e3", "GET"), {422}, "count"),
    "/test/0/image?scale=21": (lambda _: Call("/test/0/image?scale=21", "GET"), {422}, "scale"),
    "/predict?include_image=maybe": (
        lambda d: Call("/predict?include_image=maybe", files=upload(encode(d.images[SEVEN]))),
        {422},
        "include_image",
    ),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_input_gets_a_clear_4xx(api: TestClient, digits: MnistSplit, name: str) -> None:
    build, statuses, words = HOSTILE[name]
    response = send(api, build(digits))
    assert response.status_code in statuses, f"{name}: {response.status_code} {response.text[:300]}"
    assert words in error_detail(response)
    assert_still_serving(api, digits)


# ------------------------------------------------------------------------------ valid, odd images


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


# name -> (request, expected digit)
VALID: dict[str, tuple[Builder, int]] = {
    "16-bit grayscale png": (lambda d: Call(files=upload(sixteen_bit(d, SEVEN))), 7),
    "16-bit png, 28x28 mnist pixels": (
        lambda d: Call(files=upload(save(Image.fromarray(d.images[TWO].astype(np.uint16) * 257), "PNG"))),
        2,
    ),
    "palette png (adaptive, 16 colours)": (
        lambda d: Call(
            files=upload(save(scan(d, THREE).convert("RGB").quantize(16), "PNG")),
        ),
        3,
    ),
    "palette png, 28x28 mnist pixels": (
        lambda d: Call(files=upload(save(Image.fromarray(d.images[FOUR]).convert("P"), "PNG"))),
        4,
    ),
    "palette png with a transparent entry": (
        lambda d: Call(files=upload(palette_with_transparency(d, TWO))),
        2,
    ),
    "rgba, transparent background": (lambda d: Call(files=upload(transparent_background(d, SEVEN))), 7),
    "cmyk jpeg of a paper scan": (
        lambda d: Call(
            files=upload(save(scan(d, FOUR).convert("CMYK"), "JPEG", quality=95), "d.jpg", "image/jpeg")
        ),
        4,
    ),
    "animated gif: the first frame counts": (
        lambda d: Call(files=upload(animated_gif(d, SEVEN, [TWO, THREE]), "d.gif", "image/gif")),
        7,
    ),
    "1-bit png": (
        lambda d: Call(files=upload(save(Image.fromarray(d.images[THREE]).convert("1"), "PNG"))),
        3,
    ),
    "grayscale with alpha, opaque": (
        lambda d: Call(files=upload(save(scan(d, TWO).convert("LA"), "PNG"))),
        2,
    ),
    "float tiff": (
        lambda d: Call(
            files=upload(
                save(Image.fromarray(d.images[FOUR].astype(np.float32)), "TIFF"), "d.tif", "image/tiff"
            )
        ),
        4,
    ),
    "webp": (lambda d: Call(files=upload(save(scan(d, THREE), "WEBP"), "d.webp", "image/webp")), 3),
    "bmp": (lambda d: Call(files=upload(save(scan(d, SEVEN), "BMP"), "d.bmp", "image/bmp")), 7),
    "raw png body without a content type": (lambda d: Call(content=encode(d.images[TWO])), 2),
    "raw png body as application/octet-stream": (
        lambda d: Call(content=encode(d.images[THREE]), headers={"Content-Type": "application/octet-stream"}),
        3,
    ),
    "png declared as image/jpeg": (
        lambda d: Call(files=upload(encode(d.images[FOUR]), "d.jpg", "image/jpeg")),
        4,
    ),
}


@pytest.mark.parametrize("name", list(VALID))
def test_odd_but_valid_image_is_recognised(api: TestClient, digits: MnistSplit, name: str) -> None:
    build, expected = VALID[name]
    response = send(api, build(digits))
    assert response.status_code == 200, f"{name}: {response.text[:300]}"
    assert response.json()["prediction"] == expected, response.json()
    assert_still_serving(api, digits)


# EXIF orientation -> the transpose that, applied to upright pixels, gives what a camera would store.
STORED_AS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def normalised(response: httpx.Response) -> np.ndarray:
    import base64

    png = base64.b64decode(response.json()["normalisation"]["image_png"])
    return np.asarray(Image.open(io.BytesIO(png)), dtype=np.float32)


@pytest.mark.parametrize("orientation", sorted(STORED_AS))
def test_exif_rotated_jpeg_is_turned_upright(api: TestClient, digits: MnistSplit, orientation: int) -> None:
    """Pixels stored rotated or mirrored, tagged with the EXIF orientation that undoes it (as phones do)."""
    upright = scan(digits, SEVEN).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = orientation
    tagged = save(upright.transpose(STORED_AS[orientation]), "JPEG", quality=95, exif=exif)
    untagged = save(upright.transpose(STORED_AS[orientation]), "JPEG", quality=95)

    def ask(data: bytes) -> httpx.Response:
        response = api.post("/predict?include_image=true", files=upload(data, "photo.jpg", "image/jpeg"))
        assert response.status_code == 200, response.text
        return response

    reference = normalised(ask(save(upright, "JPEG", quality=95)))
    answer = ask(tagged)
    assert answer.json()["prediction"] == 7
    # The model saw the upright digit: much closer to the upright upload than the raw stored pixels are.
    turned = np.abs(normalised(answer) - reference).mean()
    ignored = np.abs(normalised(ask(untagged)) - reference).mean()
    assert turned < 2 and ignored > 10, (turned, ignored)


ONE_PIXEL = {
    "white L": Image.new("L", (1, 1), 255),
    "black L": Image.new("L", (1, 1), 0),
    "transparent RGBA": Image.new("RGBA", (1, 1), (0, 0, 0, 0)),
    "opaque RGB": Image.new("RGB", (1, 1), (10, 200, 30)),
    "16-bit": Image.new("I;16", (1, 1), 40_000),
    "palette": Image.new("P", (1, 1), 3),
    "1 x 5000 line": Image.new("L", (1, 5000), 255),
    "5000 x 1 line": Image.new("L", (5000, 1), 0),
}


@pytest.mark.parametrize("name", list(ONE_PIXEL))
def test_degenerate_image_gets_an_answer_or_a_4xx(api: TestClient, digits: MnistSplit, name: str) -> None:
    response = api.post("/predict", files=upload(save(ONE_PIXEL[name], "PNG")))
    assert response.status_code == 200 or 400 <= response.status_code < 500, response.text
    if response.status_code == 200:
        assert 0 <= response.json()["prediction"] <= 9
    else:
        error_detail(response)
    assert_still_serving(api, digits)


def test_mixed_format_batch_is_recognised_in_order(api: TestClient, digits: MnistSplit) -> None:
    files = [
        ("file", ("a.png", sixteen_bit(digits, SEVEN), "image/png")),
        ("file", ("b.jpg", save(scan(digits, TWO).convert("CMYK"), "JPEG", quality=95), "image/jpeg")),
        ("file", ("c.gif", animated_gif(digits, THREE, [SEVEN]), "image/gif")),
        ("file", ("d.png", transparent_background(digits, FOUR), "image/png")),
        ("file", ("e.png", save(scan(digits, SEVEN).quantize(8), "PNG"), "image/png")),
    ]
    response = api.post("/predict/batch", files=files)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == [7, 2, 3, 4, 7]
    assert [item["filename"] for item in response.json()["inputs"]] == [
        "a.png",
        "b.jpg",
        "c.gif",
        "d.png",
        "e.png",
    ]


@pytest.mark.parametrize(
    "layout", ["fortran order", "(N, 784)", "(N, 28, 28, 1)", "format version 2.0", "trailing bytes"]
)
def test_unusual_but_valid_arrays_are_recognised(api: TestClient, digits: MnistSplit, layout: str) -> None:
    indices = [SEVEN, TWO, THREE, FOUR]
    images = digits.images[indices]
    if layout == "fortran order":
        body = npy(np.asfortranarray(images))
    elif layout == "(N, 784)":
        body = npy(images.reshape(len(images), 784))
    elif layout == "(N, 28, 28, 1)":
        body = npy(images[..., np.newaxis])
    elif layout == "format version 2.0":
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, images, version=(2, 0))
        body = buffer.getvalue()
    else:
        body = npy(images) + b"\0" * 100
    response = api.post("/predict/batch", content=body, headers={"Content-Type": "application/x-npy"})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == [7, 2, 3, 4]


# ------------------------------------------------------------------------------------ mutations


@pytest.fixture(scope="module")
def seeds(digits: MnistSplit) -> dict[str, bytes]:
    """One valid file per format and colour mode; the mutation test damages copies of them."""
    small = Image.fromarray(paper_scan(digits.images[SEVEN], side=40))
    exif = Image.Exif()
    exif[0x0112] = 6
    return {
        "png": save(small, "PNG"),
        "png-native": save(Image.fromarray(digits.images[SEVEN]), "PNG"),  # OpenCV's path
        "png16": save(Image.fromarray(np.asarray(small).astype(np.uint16) * 257), "PNG"),
        "png-palette": save(small.quantize(16), "PNG"),
        "png-rgba": transparent_background(digits, SEVEN),
        "jpeg": save(small, "JPEG"),
        "jpeg-exif": save(small.convert("RGB"), "JPEG", exif=exif),
        "jpeg-cmyk": save(small.convert("CMYK"), "JPEG"),
        "gif": animated_gif(digits, SEVEN, [TWO]),
        "tiff": save(small, "TIFF"),
        "webp": save(small, "WEBP"),
        "bmp": save(small, "BMP"),
    }


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_damaged_images_never_cause_a_5xx(
    api: TestClient, digits: MnistSplit, seeds: dict[str, bytes], data: st.DataObject
) -> None:
    """Flip, cut and insert bytes anywhere in a valid file: 200, 400 or 413, never anything else."""
    kind = data.draw(st.sampled_from(sorted(seeds)), label="format")
    blob = bytearray(seeds[kind])
    edits = data.draw(
        st.lists(
            st.tuples(
                st.sampled_from(["set", "cut", "insert"]),
                st.integers(0, len(blob) - 1),
                st.binary(min_size=1, max_size=24),
            ),
            min_size=1,
            max_size=6,
        ),
        label="edits",
    )
    for how, at, chunk in edits:
        at = min(at, max(len(blob) - 1, 0))
        if how == "set":
            blob[at : at + len(chunk)] = chunk
        elif how == "cut":
            del blob[at : at + len(chunk) * 8]
        else:
            blob[at:at] = chunk
    response = api.post("/predict", files=upload(bytes(blob), f"damaged.{kind}", "application/octet-stream"))
    assert response.status_code in (200, 400, 413), (
        f"{kind} {edits}: {response.status_code} {response.text[:300]}"
    )
    if response.status_code != 200:
        error_detail(response)
