"""The answers of the hostile fault kinds: redirects, bounded endless streams, a gzip bomb, dripped answers.

Every stream here ends. Its size is bounded (``size_bytes``, at most 4 GiB); it is cut after
:data:`STREAM_TIME_LIMIT` seconds whatever the client does; and it stops as soon as the client goes away
(a write to a closed connection fails, and the connection is checked before every write). Bodies go out
with backpressure: the server never holds more than a chunk or two of a stream in memory, so a client
that stops reading stalls the stream (until the time limit) instead of filling the server's memory.

:class:`StreamStats` counts what was streamed, for ``GET /_emulator/state`` (``streams``): a test can see
that a stream stopped when its client left.
"""

from __future__ import annotations

import asyncio
import functools
import struct
import threading
import uuid
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from aiohttp import web

from airflow_provider_hitpaw.emulator.faults import REDIRECT_BODY_MARKER

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
#: Seconds after which any stream is cut (read at each stream's start, so a test may lower it).
STREAM_TIME_LIMIT: float = 600.0
_CHUNK: Final = 64 * 1024
_MiB: Final = 1024 * 1024
#: deflate, no flags, mtime 0, maximum compression, unknown OS
_GZIP_HEADER: Final = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
_HTML_PAGE: Final = (
    b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\n"
    b"<body><h1>Please sign in</h1><form action='/login'><input name='user'></form></body></html>\n"
)


@dataclass
class StreamStats:
    """What the streaming fault kinds sent: streams in progress, bytes written, streams cut short."""

    active: int = 0
    bytes_sent: int = 0
    cut: int = 0

    def describe(self) -> dict[str, int]:
        """The JSON form."""
        return {"active": self.active, "bytes_sent": self.bytes_sent, "cut": self.cut}

    def reset(self) -> None:
        """Forget the totals (streams in progress stay counted)."""
        self.bytes_sent = self.cut = 0


def _is_api(path: str) -> bool:
    return path.startswith("/api/")


def envelope_start(path: str) -> bytes:
    """A success envelope as ``path`` answers it, cut just after the opening quote of its ``job_id``."""
    code = 0 if path.startswith("/api/oss/") else 200
    return b'{"code":%d,"message":"OK","data":{"job_id":"' % code


def _head_and_fill(path: str) -> tuple[bytes, bytes, str]:
    """What a body for ``path`` starts with, what it goes on with, and its Content-Type."""
    if _is_api(path):
        return envelope_start(path), b"0", "application/json"
    return PNG_SIGNATURE, b"\0", "image/png"


async def _body(head: bytes, fill: bytes, size: int, tail: bytes = b"") -> AsyncIterator[bytes]:
    """``size`` bytes: ``head``, ``fill`` repeated, then ``tail`` (cut to ``size`` if they are longer)."""
    if len(head) + len(tail) >= size:
        yield (head + tail)[:size]
        return
    yield head
    left = size - len(head) - len(tail)
    block = fill * _CHUNK
    while left > 0:
        piece = block if left >= _CHUNK else block[:left]
        left -= len(piece)
        yield piece
    if tail:
        yield tail


async def _send(
    request: web.Request,
    response: web.StreamResponse,
    chunks: AsyncIterator[bytes],
    stats: StreamStats,
) -> web.StreamResponse:
    """Stream ``chunks``; stop when the client is gone or at the time limit (then cut the connection)."""
    stats.active += 1
    complete = False
    try:
        async with asyncio.timeout(STREAM_TIME_LIMIT):
            await response.prepare(request)
            async for chunk in chunks:
                if request.transport is None or request.transport.is_closing():
                    break
                await response.write(chunk)
                stats.bytes_sent += len(chunk)
            else:
                await response.write_eof()
                complete = True
    except (ConnectionError, TimeoutError):
        pass
    finally:
        stats.active -= 1
    if not complete:
        stats.cut += 1
        if request.transport is not None:
            request.transport.abort()  # the body is incomplete: the client must see the connection end
    return response


def redirect(location: str) -> web.Response:
    """HTTP 302 to ``location``, with a body a client must never show (it holds the marker)."""
    body = f"<html><body><p>{REDIRECT_BODY_MARKER}: moved to an internal address</p></body></html>\n"
    return web.Response(status=302, headers={"Location": location}, text=body, content_type="text/html")


def png_then_html() -> web.Response:
    """HTTP 200 ``image/png`` whose body is the PNG signature, then an HTML page."""
    return web.Response(status=200, body=PNG_SIGNATURE + _HTML_PAGE, content_type="image/png")


async def endless(request: web.Request, size: int, stats: StreamStats) -> web.StreamResponse:
    """HTTP 200 with ``size`` bytes, chunked (no Content-Length), as fast as the client reads."""
    head, fill, content_type = _head_and_fill(request.path)
    response = web.StreamResponse(status=200, headers={"Content-Type": content_type})
    response.enable_chunked_encoding()
    return await _send(request, response, _body(head, fill, size), stats)


async def huge_json(request: web.Request, size: int, stats: StreamStats) -> web.StreamResponse:
    """HTTP 200 with a complete, valid JSON envelope of ``size`` bytes (at least the envelope itself)."""
    code = 0 if request.path.startswith("/api/oss/") else 200
    head = b'{"code":%d,"message":"OK","data":{"job_id":"%s","status":"CONVERTING","padding":"' % (
        code,
        str(uuid.uuid4()).encode(),
    )
    tail = b'"}}'
    size = max(size, len(head) + len(tail))
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.content_length = size
    return await _send(request, response, _body(head, b"0", size, tail), stats)


async def drip(
    request: web.Request, answer: web.StreamResponse, delay: float, count: int | None, stats: StreamStats
) -> web.StreamResponse:
    """``answer`` (already made by the handler), its first ``count`` bytes (all if None) one per ``delay``."""
    if not isinstance(answer, web.Response) or not isinstance(answer.body, bytes):
        return answer  # nothing to drip (a handler that streams itself)
    body = answer.body
    headers = {
        k: v for k, v in answer.headers.items() if k.lower() not in ("content-length", "transfer-encoding")
    }
    response = web.StreamResponse(status=answer.status, reason=answer.reason, headers=headers)
    response.content_length = len(body)
    dripped = len(body) if count is None else min(count, len(body))

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(dripped):
            await asyncio.sleep(delay)
            yield body[i : i + 1]
        if dripped < len(body):
            yield body[dripped:]

    return await _send(request, response, chunks(), stats)


_BOMB_LOCK: Final = threading.Lock()


def gzip_bomb(head: bytes, fill: bytes, size: int) -> bytes:
    """A gzip member of about ``size / 1000`` bytes that inflates to ``size`` bytes: ``head``, then ``fill``.

    Built once per (head, fill, size) and cached; building never holds the inflated data. The deflate stream
    is made of identical 1 MiB segments (each compressed after a full flush, which makes them independent
    and byte-aligned), so only two segments are ever compressed; the CRC is computed over the inflated data
    piece by piece. Thread-safe: concurrent first callers wait for one build.
    """
    with _BOMB_LOCK:
        return _build_gzip_bomb(head, fill, size)


@functools.lru_cache(maxsize=8)
def _build_gzip_bomb(head: bytes, fill: bytes, size: int) -> bytes:
    head = head[:size]
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [_GZIP_HEADER, compressor.compress(head) + compressor.flush(zlib.Z_FULL_FLUSH)]
    crc = zlib.crc32(head)
    segments, rest = divmod(size - len(head), _MiB)
    if segments:
        block = fill * _MiB
        segment = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
        parts.append(segment)
        if segments > 1:
            again = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
            parts.append(again)
            if again == segment:  # after a full flush, the same input compresses to the same bytes
                parts.extend([segment] * (segments - 2))
            else:  # a zlib that does otherwise: compress every segment (slower, same result)
                parts.extend(
                    compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
                    for _ in range(segments - 2)
                )
        for _ in range(segments):
            crc = zlib.crc32(block, crc)
    tail = fill * rest
    parts.append(compressor.compress(tail) + compressor.flush(zlib.Z_FINISH))
    crc = zlib.crc32(tail, crc)
    parts.append(struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF))
    return b"".join(parts)


async def gzip_bomb_response(request: web.Request, size: int) -> web.Response:
    """HTTP 200, ``Content-Encoding: gzip``, a small body that inflates to ``size`` bytes."""
    head, fill, content_type = _head_and_fill(request.path)
    body = await asyncio.to_thread(gzip_bomb, head, fill, size)
    return web.Response(
        status=200, body=body, content_type=content_type, headers={"Content-Encoding": "gzip"}
    )
