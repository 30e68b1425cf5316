"""Uploads decoded: MNIST's own PNGs by the chunk-checking reader and OpenCV, exactly as Pillow's
path would read them; every other file by Pillow, read or refused with a message naming the
damage; and the work happens off the event loop."""

from __future__ import annotations

import asyncio
import io
import struct
import threading
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from starlette.requests import Request

from app.api import uploads
from app.api.errors import ApiError
from app.api.uploads import digit_of_bytes, uploaded_digit, uploaded_digits
from app.inputs.imaging import ImageError, ImageTooLargeError, decode, read_native_png
from bench.digits import encode as png
from model_store.mnist_data import MnistSplit
from model_store.normalisation import JPEG_DRAFT_SIDE, normalise_decoded

MAX_PIXELS = 4096 * 4096


def answer(data: bytes) -> tuple[bytes, list[str]] | str:
    """What the service makes of a file: the digit and its steps, or the error's status and message."""
    try:
        digit = asyncio.run(digit_of_bytes(data, MAX_PIXELS))
    except ApiError as exc:
        return f"{exc.status_code} {exc.detail}"
    return digit.pixels.tobytes(), digit.steps


def test_real_digits_in_mnists_own_format_are_used_as_they_are(test_split: MnistSplit) -> None:
    for index, pixels in enumerate(test_split.images[:100]):
        assert answer(png(pixels)) == (pixels.tobytes(), []), index
    # Dark on light: only turned around.
    assert answer(png(255 - test_split.images[7])) == (test_split.images[7].tobytes(), ["inverted"])


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
        uploads.decode_and_normalise(out.getvalue(), 59_999, "file 3 (a.png)")
    assert (raised.value.status_code, raised.value.detail[:15]) == (413, "file 3 (a.png):")


def test_a_large_jpeg_is_decoded_at_a_reduced_scale(test_split: MnistSplit) -> None:
    side = 4 * JPEG_DRAFT_SIDE
    big = Image.fromarray(255 - test_split.images[3]).resize((side, side), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    big.save(out, format="JPEG", quality=90)
    decoded = decode(out.getvalue(), MAX_PIXELS)
    assert decoded.original_size == (side, side)
    assert max(decoded.image.size) < side
    digit = asyncio.run(digit_of_bytes(out.getvalue(), MAX_PIXELS))
    assert digit.original_size == (side, side)
    assert digit.steps[0] == f"decoded_at_{decoded.image.size[0]}x{decoded.image.size[1]}"


def request_with(body: bytes, content_type: str) -> Request:
    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    headers = [(b"content-type", content_type.encode())]
    return Request({"type": "http", "method": "POST", "path": "/predict", "headers": headers}, receive)


def multipart(*files: bytes) -> tuple[bytes, str]:
    parts = b"".join(
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="%d.png"\r\n\r\n%s\r\n' % (i, data)
        for i, data in enumerate(files)
    )
    return parts + b"--b--\r\n", "multipart/form-data; boundary=b"


def test_decoding_runs_on_a_worker_thread_not_the_event_loop(
    test_split: MnistSplit, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[threading.Thread] = []
    real = uploads.decode_and_normalise

    def recording(data: bytes, max_pixels: int, label: str):  # type: ignore[no-untyped-def]
        threads.append(threading.current_thread())
        return real(data, max_pixels, label)

    monkeypatch.setattr(uploads, "decode_and_normalise", recording)
    # Twice MNIST's size: Pillow's path, not the in-place read of a native PNG.
    one, two = (png(np.kron(test_split.images[i], np.ones((2, 2), np.uint8))) for i in (0, 1))

    async def every_way() -> threading.Thread:
        raw = await uploaded_digit(request_with(one, "image/png"), MAX_PIXELS)
        form = await uploaded_digit(request_with(*multipart(one)), MAX_PIXELS)
        batch = await uploaded_digits(request_with(*multipart(one, two)), 10, MAX_PIXELS)
        contributed = await digit_of_bytes(two, MAX_PIXELS)
        assert raw.pixels.tobytes() == form.pixels.tobytes() == batch[0].digit.pixels.tobytes()
        assert [upload.filename for upload in batch] == ["0.png", "1.png"]
        assert contributed.pixels.tobytes() == batch[1].digit.pixels.tobytes()
        return threading.current_thread()

    loop_thread = asyncio.run(every_way())
    assert len(threads) == 5 and all(thread is not loop_thread for thread in threads)


def with_chunk(data: bytes, kind: bytes, body: bytes) -> bytes:
    """`data` with one more chunk right after IHDR."""
    chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    after_ihdr = 8 + 8 + 13 + 4
    return data[:after_ihdr] + chunk + data[after_ihdr:]


def pillow_path(data: bytes):  # type: ignore[no-untyped-def]
    decoded = decode(data, MAX_PIXELS)
    return normalise_decoded(decoded.image, original_size=decoded.original_size)


def test_real_digits_decode_exactly_as_pillow_reads_them(test_split: MnistSplit) -> None:
    for index, pixels in enumerate(test_split.images[:300]):
        # Pillow's encoder and OpenCV's, at two compression levels: other filters and deflate streams.
        for data in (
            png(pixels),
            png(pixels, compress_level=1),
            cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes(),
        ):
            decoded = read_native_png(data)
            assert decoded is not None, index
            np.testing.assert_array_equal(decoded, pixels)


@pytest.mark.parametrize("dark_on_light", [False, True])
def test_the_fast_path_answers_as_pillows_path_would(
    test_split: MnistSplit, monkeypatch: pytest.MonkeyPatch, dark_on_light: bool
) -> None:
    pixels = test_split.images[128]
    data = png(255 - pixels if dark_on_light else pixels)
    expected = pillow_path(data)

    def no_pillow(*args: object) -> None:
        raise AssertionError("a native PNG went through Pillow")

    monkeypatch.setattr(uploads, "decode", no_pillow)
    digit = asyncio.run(digit_of_bytes(data, MAX_PIXELS))
    np.testing.assert_array_equal(digit.pixels, expected.pixels)
    np.testing.assert_array_equal(digit.pixels, pixels)
    assert digit.steps == expected.steps == (["inverted"] if dark_on_light else [])
    assert (digit.original_size, digit.original_mode) == (expected.original_size, expected.original_mode)


def test_text_chunks_do_not_leave_the_fast_path(test_split: MnistSplit) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "a drawing app")
    info.add_text("Comment", "a long comment " * 20, zip=True)
    info.add_itxt("Title", "ein Ziffer")
    data = png(test_split.images[7], pnginfo=info, dpi=(300, 300))
    np.testing.assert_array_equal(read_native_png(data), test_split.images[7])


def exif_orientation(rotation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = rotation
    return exif.tobytes()


def palette_png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).convert("P").save(out, format="PNG")
    return out.getvalue()


def other_files(pixels: np.ndarray) -> dict[str, bytes]:
    """Files the fast path must leave to Pillow, each for its own reason."""
    plain = png(pixels)
    raw_exif = PngImagePlugin.PngInfo()
    raw_exif.add_text("Raw profile type exif", "exif\n 10\n4d4d002a00000008")
    return {
        "16-bit": png(pixels.astype(np.uint16) * 257),
        "RGB": png(np.stack([pixels] * 3, axis=-1)),
        "palette": palette_png(pixels),
        "27 wide": png(pixels[:, :27]),
        "transparency": png(pixels, transparency=0),
        "EXIF orientation": png(pixels, exif=exif_orientation(6)),
        "EXIF in a text chunk": png(pixels, pnginfo=raw_exif),
        "gamma": with_chunk(plain, b"gAMA", struct.pack(">I", 45455)),
        "bad CRC": plain[:-13] + bytes([plain[-13] ^ 0xFF]) + plain[-12:],  # IDAT's
        "flipped data bit": plain[:50] + bytes([plain[50] ^ 0x10]) + plain[51:],
        "truncated": plain[: len(plain) // 2],
        "no IEND": plain[:-12],
        "trailing bytes after a short chunk list": plain[:8] + plain[8:33],
    }


def with_idat(data: bytes, body: bytes) -> bytes:
    """`data` (one IDAT) with that chunk's body replaced and its CRC made right again."""
    length = struct.unpack(">I", data[33:37])[0]
    assert data[37:41] == b"IDAT"
    chunk = struct.pack(">I", len(body)) + b"IDAT" + body + struct.pack(">I", zlib.crc32(b"IDAT" + body))
    return data[:33] + chunk + data[33 + 12 + length :]


def test_damage_behind_valid_checksums_is_answered_as_before(test_split: MnistSplit) -> None:
    plain = png(test_split.images[0])
    rows = zlib.decompress(plain[41 : 41 + struct.unpack(">I", plain[33:37])[0]])
    damaged = {
        "garbled deflate stream": with_idat(plain, b"\x78\x9c" + bytes(range(7, 200, 3))),
        "too few rows": with_idat(plain, zlib.compress(rows[: len(rows) // 2])),
        "unknown row filter": with_idat(plain, zlib.compress(b"\x09" + rows[1:])),
        "no data": with_idat(plain, b""),
    }
    for reason, data in damaged.items():
        assert read_native_png(data) is None, reason
        assert answer(data) == pillow_answer(data), reason
    for reason in ("garbled deflate stream", "unknown row filter", "no data"):
        assert str(answer(damaged[reason])).startswith("400 the image: the image is corrupt"), reason


def test_every_other_file_is_left_to_pillow(test_split: MnistSplit) -> None:
    for reason, data in other_files(test_split.images[0]).items():
        assert read_native_png(data) is None, reason


def pillow_answer(data: bytes) -> tuple[bytes, list[str]] | str:
    try:
        digit = pillow_path(data)
    except ImageError as exc:
        return f"400 the image: {exc}"
    return digit.pixels.tobytes(), digit.steps


def test_files_left_to_pillow_are_answered_as_before(test_split: MnistSplit) -> None:
    pixels = test_split.images[0]
    files = other_files(pixels)
    for reason, data in files.items():
        assert answer(data) == pillow_answer(data), reason
    # Which shows that the rotated one is turned, and the damaged ones get the 400 naming the damage.
    assert answer(files["EXIF orientation"])[0] != pixels.tobytes()
    for reason in ("truncated", "flipped data bit"):
        assert str(answer(files[reason])).startswith("400 the image: the image is corrupt or truncated")


def test_only_a_small_native_png_is_read_in_place(test_split: MnistSplit) -> None:
    """The in-place read stays microseconds: a native PNG padded past the bound (its checksum walk
    grows with the file) is left to the worker thread's path, which reads it the same."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "x" * uploads.NATIVE_INLINE_BYTES)
    padded = png(test_split.images[0], pnginfo=info)
    assert uploads.native_digit(png(test_split.images[0])) is not None
    assert uploads.native_digit(padded) is None
    assert answer(padded) == (test_split.images[0].tobytes(), [])
