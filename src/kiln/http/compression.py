"""Response compression: gzip (zlib) and brotli, for whole bodies and for streams.

A stream is compressed incrementally and flushed after every chunk, so a client
can decode each chunk as it arrives. The levels favour speed: these bodies are
compressed once per request, not once per deployment.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from typing import Protocol

import brotli

GZIP_LEVEL = 6
"""zlib's level for gzip: its default balance of speed and size."""
BROTLI_QUALITY = 4
"""Brotli's quality (0-11): about gzip's speed with smaller output; 11 is far too slow here."""
_GZIP_WINDOW = 16 + zlib.MAX_WBITS
"""zlib's window bits for a gzip header and trailer."""


class _Compressor(Protocol):
    def compress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...

    def finish(self) -> bytes: ...


class _Gzip:
    def __init__(self) -> None:
        self._zlib = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WINDOW)

    def compress(self, data: bytes) -> bytes:
        return self._zlib.compress(data)

    def flush(self) -> bytes:
        return self._zlib.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._zlib.flush(zlib.Z_FINISH)


class _Brotli:
    def __init__(self) -> None:
        self._brotli = brotli.Compressor(quality=BROTLI_QUALITY)

    def compress(self, data: bytes) -> bytes:
        return self._brotli.process(data)

    def flush(self) -> bytes:
        return self._brotli.flush()

    def finish(self) -> bytes:
        return self._brotli.finish()


_COMPRESSORS: dict[str, type[_Gzip] | type[_Brotli]] = {"gzip": _Gzip, "br": _Brotli}


def _compressor(coding: str) -> _Compressor:
    return _COMPRESSORS[coding]()


def compress(body: bytes, coding: str) -> bytes:
    """``body`` compressed with ``coding`` (``br`` or ``gzip``)."""
    if coding == "br":
        return brotli.compress(body, quality=BROTLI_QUALITY)
    compressor = _compressor(coding)
    return compressor.compress(body) + compressor.finish()


async def compress_stream(chunks: AsyncIterator[bytes], coding: str) -> AsyncIterator[bytes]:
    """``chunks`` compressed with ``coding`` as one stream, one flushed piece per chunk."""
    compressor = _compressor(coding)
    async for chunk in chunks:
        piece = compressor.compress(chunk) + compressor.flush()
        if piece:
            yield piece
    yield compressor.finish()
