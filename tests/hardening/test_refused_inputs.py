"""Hostile inputs get a clear 4xx JSON error, never a 500, and the next good request still answers.

tests/app/api/test_bad_input.py already covers the plain cases (text, random bytes, a truncated PNG,
an empty file, a real 20,000 x 20,000 PNG, /test/-1 and friends, one bad file in a two-file batch);
this corpus goes past them: formats and colour modes, lying headers, multipart abuse.
"""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from model_store.mnist_data import MnistSplit
from tests.app.conftest import encode
from tests.support.hostile import (
    BOMB_SIDE,
    SEVEN,
    Builder,
    Call,
    assert_still_serving,
    batch_with,
    error_detail,
    gif_claiming,
    jpeg_claiming,
    npy,
    npy_claiming,
    png_claiming,
    save,
    scan,
    send,
    truncated,
    upload,
)

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
