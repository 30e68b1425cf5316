"""The in-memory multipart parser behind the upload routes, on bodies built by httpx as a client
would send them (the HTTP behaviour is in tests/hardening/test_refused_inputs.py)."""

from __future__ import annotations

import httpx
import pytest

from app.inputs.multipart import MAX_FIELD_BYTES, MultipartError, parse_multipart
from model_store.mnist_data import MnistSplit
from tests.app.conftest import encode

Files = list[tuple[str, tuple[str, bytes, str]]]


def form(files: Files, data: dict[str, str] | None = None) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://x/", files=files, data=data)
    return request.read(), request.headers["content-type"]


def test_files_come_back_byte_for_byte_in_order(test_split: MnistSplit) -> None:
    pngs = [encode(test_split.images[i]) for i in range(3)]
    body, kind = form([("file", (f"{i}.png", png, "image/png")) for i, png in enumerate(pngs)], {"note": "x"})
    files, fields = parse_multipart(body, kind, max_files=3, max_fields=3)
    assert [(part.name, part.filename, part.data) for part in files] == [
        ("file", f"{i}.png", png) for i, png in enumerate(pngs)
    ]
    assert fields == ["note"]


def test_a_non_ascii_file_name_survives(test_split: MnistSplit) -> None:
    body, kind = form([("file", ("chiffre-huit-é.png", encode(test_split.images[128]), "image/png"))])
    files, _ = parse_multipart(body, kind, max_files=1, max_fields=1)
    assert files[0].filename == "chiffre-huit-é.png"


@pytest.mark.parametrize(
    ("files", "data", "status", "fragment"),
    [
        ([("file", ("a.png", b"x", "image/png"))] * 2, None, 413, "Too many files"),
        ([("file", ("a.png", b"x", "image/png"))], {"a": "1", "b": "2"}, 413, "Too many fields"),
        ([("file", ("a.png", b"x", "image/png"))], {"a": "x" * (MAX_FIELD_BYTES + 1)}, 413, "maximum size"),
    ],
)
def test_limits(files: Files, data: dict[str, str] | None, status: int, fragment: str) -> None:
    body, kind = form(files, data)
    with pytest.raises(MultipartError, match=fragment) as caught:
        parse_multipart(body, kind, max_files=1, max_fields=1)
    assert caught.value.status == status


@pytest.mark.parametrize(
    ("body", "kind", "fragment"),
    [
        (b"--b\r\n\r\n", "multipart/form-data", "boundary"),
        (b'{"file": 1}', "multipart/form-data; boundary=b", "Invalid multipart"),
        (b"--b\r\nContent-Type: image/png\r\n\r\nxx\r\n--b--\r\n", "multipart/form-data; boundary=b", "name"),
    ],
)
def test_malformed_bodies_are_400(body: bytes, kind: str, fragment: str) -> None:
    with pytest.raises(MultipartError, match=fragment) as caught:
        parse_multipart(body, kind, max_files=1, max_fields=1)
    assert caught.value.status == 400


def test_a_body_cut_off_inside_the_file_yields_no_file(test_split: MnistSplit) -> None:
    body, kind = form([("file", ("d.png", encode(test_split.images[7]), "image/png"))])
    files, _ = parse_multipart(body[: len(body) // 2], kind, max_files=1, max_fields=1)
    assert files == []
