"""Odd but valid images and arrays are recognised: 16-bit, palette and transparent PNGs, EXIF-rotated
JPEGs, degenerate sizes, mixed-format batches, unusual .npy layouts."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from model_store.mnist_data import MnistSplit
from tests.app.conftest import encode
from tests.support.hostile import (
    FOUR,
    SEVEN,
    THREE,
    TWO,
    Builder,
    Call,
    animated_gif,
    assert_still_serving,
    error_detail,
    npy,
    palette_with_transparency,
    save,
    scan,
    send,
    sixteen_bit,
    transparent_background,
    upload,
)

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
