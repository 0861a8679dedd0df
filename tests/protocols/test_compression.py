"""Response compression against a real server: gzip and brotli, whole and streamed.

The module's server compresses responses over 2 KiB (``http.compressionThreshold``);
raw bytes are read with ``iter_raw`` and decompressed here, so the test sees
what went over the wire.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import brotli
import httpx
import pytest

SCHEMA = """
type Note @table @export {
  id: Int @primaryKey
  text: String
}
"""

THRESHOLD = 2048
CONFIG = "http:\n  compressionThreshold: 2KiB\n"
AUTH = ("admin", "admin-password")
NOTES = 2000

DECOMPRESS = {
    "gzip": lambda data: zlib.decompress(data, 16 + zlib.MAX_WBITS),
    "br": brotli.decompress,
}


@pytest.fixture(scope="module")
def notes(kiln_server: Any) -> list[dict[str, Any]]:
    """``NOTES`` records: a collection of well over one 64 KiB chunk."""
    with httpx.Client(base_url=kiln_server.url, auth=AUTH, timeout=30) as client:
        records = []
        for n in range(NOTES):
            text = f"note {n}: " + "lorem ipsum dolor " * 3
            assert client.put(f"/Note/{n}", json={"text": text}).status_code == 204
            records.append({"text": text, "id": n})
    return records


def raw_get(http: httpx.Client, path: str, **headers: str) -> tuple[httpx.Response, bytes]:
    """The response and its body exactly as sent (not decompressed)."""
    with http.stream("GET", path, headers=headers) as response:
        return response, b"".join(response.iter_raw())


def write_note(http: httpx.Client, n: int, size: int) -> str:
    path = f"/Note/{100_000 + n}"
    assert http.put(path, json={"text": "x" * size}).status_code == 204
    return path


@pytest.mark.parametrize("coding", ["gzip", "br"])
def test_a_large_collection_is_compressed_as_a_stream(
    http: httpx.Client, notes: list[dict[str, Any]], coding: str
) -> None:
    response, raw = raw_get(http, "/Note/?limit(2000)", **{"accept-encoding": coding})
    assert response.headers["content-encoding"] == coding
    assert response.headers.get("transfer-encoding") == "chunked"
    assert "Accept-Encoding" in response.headers["vary"]
    decoded = DECOMPRESS[coding](raw)
    assert len(raw) < len(decoded) / 3
    assert json.loads(decoded) == notes


@pytest.mark.parametrize("coding", ["gzip", "br"])
def test_a_large_cbor_stream_is_compressed_too(
    http: httpx.Client, notes: list[dict[str, Any]], coding: str
) -> None:
    headers = {"accept-encoding": coding, "accept": "application/cbor"}
    response, raw = raw_get(http, "/Note/?limit(2000)", **headers)
    assert response.headers["content-encoding"] == coding
    decoded = DECOMPRESS[coding](raw)
    assert (decoded[0], decoded[-1]) == (0x9F, 0xFF)


@pytest.mark.parametrize(
    ("accept_encoding", "coding"),
    [
        ("gzip, br", "br"),
        ("br;q=0, gzip", "gzip"),
        ("gzip;q=1, br;q=0.5", "gzip"),
        ("*", "br"),
        ("*;q=0.5, br;q=0", "gzip"),
        ("gzip;q=0", None),
        ("br;q=0, gzip;q=0", None),
        ("identity", None),
        ("deflate", None),
    ],
)
def test_accept_encoding_chooses_the_coding(
    http: httpx.Client, accept_encoding: str, coding: str | None
) -> None:
    path = write_note(http, 1, 3 * THRESHOLD)
    response, raw = raw_get(http, path, **{"accept-encoding": accept_encoding})
    assert response.headers.get("content-encoding") == coding
    body = raw if coding is None else DECOMPRESS[coding](raw)
    assert json.loads(body)["text"] == "x" * 3 * THRESHOLD
    if coding is None:
        assert "Accept-Encoding" not in response.headers.get("vary", "")
    else:
        assert "Accept-Encoding" in response.headers["vary"]
        assert int(response.headers["content-length"]) == len(raw) < len(body)


def test_a_response_under_the_threshold_is_not_compressed(http: httpx.Client) -> None:
    path = write_note(http, 2, THRESHOLD // 2)
    response, raw = raw_get(http, path, **{"accept-encoding": "gzip, br"})
    assert "content-encoding" not in response.headers
    assert json.loads(raw)["text"] == "x" * (THRESHOLD // 2)
    # over the default 1 KiB, but under this server's 2 KiB threshold
    path = write_note(http, 3, THRESHOLD - 100)
    response, raw = raw_get(http, path, **{"accept-encoding": "gzip"})
    assert len(raw) > 1024
    assert "content-encoding" not in response.headers


def test_a_small_collection_is_not_compressed(
    http: httpx.Client, notes: list[dict[str, Any]]
) -> None:
    response, raw = raw_get(http, "/Note/?limit(3)", **{"accept-encoding": "gzip, br"})
    assert "content-encoding" not in response.headers
    assert json.loads(raw) == notes[:3]


def test_head_reports_the_compressed_length(http: httpx.Client) -> None:
    path = write_note(http, 4, 4 * THRESHOLD)
    headers = {"accept-encoding": "gzip"}
    head = http.head(path, headers=headers)
    _response, raw = raw_get(http, path, **headers)
    assert head.headers["content-encoding"] == "gzip"
    assert int(head.headers["content-length"]) == len(raw)
