"""Uploads decoded by Pillow: MNIST's own PNGs come out as they went in, every other file is read or
refused with a message naming the damage, and the work happens off the event loop."""

from __future__ import annotations

import asyncio
import io
import struct
import threading
import zlib

import pytest
from PIL import Image

from app.api import uploads
from app.api.errors import ApiError
from app.api.uploads import prepare_digit
from app.inputs.imaging import JPEG_DRAFT_SIDE, ImageTooLargeError, decode
from bench.digits import encode as png
from model_store.mnist_data import MnistSplit

MAX_PIXELS = 4096 * 4096


def answer(data: bytes) -> tuple[bytes, list[str]] | str:
    """What the service makes of a file: the digit and its steps, or the error's status and message."""
    try:
        digit = asyncio.run(prepare_digit(data, MAX_PIXELS))
    except ApiError as exc:
        return f"{exc.status_code} {exc.detail}"
    return digit.pixels.tobytes(), digit.steps


def test_real_digits_in_mnists_own_format_are_used_as_they_are(test_split: MnistSplit) -> None:
    for index, pixels in enumerate(test_split.images[:100]):
        assert answer(png(pixels)) == (pixels.tobytes(), []), index
    # Dark on light: only turned around.
    assert answer(png(255 - test_split.images[7])) == (test_split.images[7].tobytes(), ["inverted"])


def exif_orientation(rotation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = rotation
    return exif.tobytes()


def test_an_exif_orientation_is_applied(test_split: MnistSplit) -> None:
    pixels = test_split.images[0]
    turned = answer(png(pixels, exif=exif_orientation(6)))
    assert isinstance(turned, tuple) and turned[0] != pixels.tobytes()


def test_damaged_files_get_a_400_naming_the_damage(test_split: MnistSplit) -> None:
    plain = png(test_split.images[0])
    length = struct.unpack(">I", plain[33:37])[0]
    garbled = b"\x78\x9c" + bytes(range(7, 200, 3))
    idat = (
        struct.pack(">I", len(garbled)) + b"IDAT" + garbled + struct.pack(">I", zlib.crc32(b"IDAT" + garbled))
    )
    damaged = {
        "truncated": plain[: len(plain) // 2],
        "flipped data bit": plain[:50] + bytes([plain[50] ^ 0x10]) + plain[51:],
        "garbled deflate stream": plain[:33] + idat + plain[33 + 12 + length :],
    }
    for reason, data in damaged.items():
        assert str(answer(data)).startswith("400 the image: the image is corrupt or truncated"), reason
    assert answer(b"hello") == "400 the image: not a recognised image; send PNG, JPEG, BMP, GIF, WebP or TIFF"
    assert answer(b"") == "400 the image: the image is empty (0 bytes)"


def test_the_pixel_limit_is_checked_before_decoding() -> None:
    out = io.BytesIO()
    Image.new("L", (300, 200)).save(out, format="PNG")
    with pytest.raises(ImageTooLargeError, match="300x200 = 60000 pixels; the limit is 59999"):
        decode(out.getvalue(), 59_999)
    with pytest.raises(ApiError) as raised:
        asyncio.run(prepare_digit(out.getvalue(), 59_999, "file 3 (a.png)"))
    assert (raised.value.status_code, raised.value.detail[:15]) == (413, "file 3 (a.png):")


def test_a_large_jpeg_is_decoded_at_a_reduced_scale(test_split: MnistSplit) -> None:
    side = 4 * JPEG_DRAFT_SIDE
    big = Image.fromarray(255 - test_split.images[3]).resize((side, side), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    big.save(out, format="JPEG", quality=90)
    decoded = decode(out.getvalue(), MAX_PIXELS)
    assert decoded.original_size == (side, side)
    assert max(decoded.image.size) < side
    digit = asyncio.run(prepare_digit(out.getvalue(), MAX_PIXELS))
    assert digit.original_size == (side, side)
    assert digit.steps[0] == f"decoded_at_{decoded.image.size[0]}x{decoded.image.size[1]}"


def test_decoding_runs_on_a_worker_thread_not_the_event_loop(
    test_split: MnistSplit, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[threading.Thread] = []
    real = uploads.decode_and_normalise

    def recording(data: bytes, max_pixels: int):  # type: ignore[no-untyped-def]
        threads.append(threading.current_thread())
        return real(data, max_pixels)

    monkeypatch.setattr(uploads, "decode_and_normalise", recording)

    async def both() -> threading.Thread:
        await prepare_digit(png(test_split.images[0]), MAX_PIXELS)
        await uploads.prepare_digits([(png(test_split.images[1]), "file 0")], MAX_PIXELS)
        return threading.current_thread()

    loop_thread = asyncio.run(both())
    assert len(threads) == 2 and all(thread is not loop_thread for thread in threads)
