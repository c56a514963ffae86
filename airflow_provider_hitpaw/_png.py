"""A PNG's structure, checked as its bytes stream past, without decoding a pixel.

A result link that answers with the PNG signature followed by an HTML error page must not be kept as a
cut-out. Checking the signature alone would keep it; decoding the image would need Pillow on every worker
and memory for every pixel. Walking the chunks (IHDR first, each length and CRC, an IDAT, IEND last and
nothing after it) proves the file is a whole PNG at the cost of a CRC over its bytes.
"""

from __future__ import annotations

import struct
import zlib
from typing import Final

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"

#: PNG's own limit on a chunk's length (2**31 - 1).
_MAX_CHUNK_LENGTH: Final = 0x7FFFFFFF
#: Colour types and the bit depths each allows (PNG specification, section 11.2.2).
_BIT_DEPTHS: Final[dict[int, frozenset[int]]] = {
    0: frozenset({1, 2, 4, 8, 16}),
    2: frozenset({8, 16}),
    3: frozenset({1, 2, 4, 8}),
    4: frozenset({8, 16}),
    6: frozenset({8, 16}),
}


class PngError(ValueError):
    """The bytes are not (or not yet, or no longer) a well-formed PNG; the message says where."""


class PngChecker:
    """Feed a file's bytes in any slicing with :meth:`feed`, then call :meth:`finish`.

    Each raises :class:`PngError` as soon as the bytes cannot be a PNG, so a download can stop early.
    Memory use is constant: chunk data is only run through the CRC.
    """

    def __init__(self) -> None:
        self._offset = 0
        self._header = bytearray()  # the signature, then each chunk's length and type
        self._chunk_type = b""
        self._remaining = 0  # data bytes of the current chunk still to come
        self._crc = 0
        self._crc_bytes = bytearray()
        self._ihdr = bytearray()
        self._state = "signature"
        self._chunks = 0
        self._seen_idat = False

    @property
    def complete(self) -> bool:
        """Whether IEND has been read (nothing more may follow)."""
        return self._state == "done"

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._state == "done":
                raise PngError(f"bytes follow the IEND chunk at offset {self._offset}")
            if self._state == "signature":
                view = self._take_signature(view)
            elif self._state == "header":
                view = self._take_header(view)
            elif self._state == "data":
                view = self._take_data(view)
            else:
                view = self._take_crc(view)

    def finish(self) -> None:
        if self._state == "signature" and not self._header:
            raise PngError("the file is empty")
        if self._state != "done":
            raise PngError(f"the file ends at offset {self._offset}, before its IEND chunk")

    def _advance(self, view: memoryview, count: int) -> memoryview:
        self._offset += count
        return view[count:]

    def _take_signature(self, view: memoryview) -> memoryview:
        need = len(PNG_SIGNATURE) - len(self._header)
        piece = bytes(view[:need])
        self._header += piece
        if not PNG_SIGNATURE.startswith(bytes(self._header)):
            raise PngError(
                f"it does not start with the PNG signature (it starts with {bytes(self._header)!r})"
            )
        if len(self._header) == len(PNG_SIGNATURE):
            self._header.clear()
            self._state = "header"
        return self._advance(view, len(piece))

    def _take_header(self, view: memoryview) -> memoryview:
        need = 8 - len(self._header)
        piece = bytes(view[:need])
        self._header += piece
        view = self._advance(view, len(piece))
        if len(self._header) < 8:
            return view
        length, chunk_type = struct.unpack(">I4s", bytes(self._header))
        self._header.clear()
        where = self._offset - 8
        if length > _MAX_CHUNK_LENGTH:
            raise PngError(f"the chunk at offset {where} claims {length} bytes")
        if not all(65 <= byte <= 90 or 97 <= byte <= 122 for byte in chunk_type):
            raise PngError(f"the chunk at offset {where} has no valid type ({chunk_type!r})")
        if self._chunks == 0 and chunk_type != b"IHDR":
            raise PngError(f"the first chunk is {chunk_type!r}, not IHDR")
        if chunk_type == b"IHDR" and (self._chunks != 0 or length != 13):
            raise PngError(f"an IHDR chunk of {length} bytes at offset {where}")
        if chunk_type == b"IEND" and length != 0:
            raise PngError(f"an IEND chunk of {length} bytes at offset {where}")
        if chunk_type == b"IEND" and not self._seen_idat:
            raise PngError("the file ends without any image data (IDAT)")
        self._seen_idat = self._seen_idat or chunk_type == b"IDAT"
        self._chunk_type = chunk_type
        self._remaining = length
        self._crc = zlib.crc32(chunk_type)
        self._chunks += 1
        self._state = "data" if length else "crc"
        return view

    def _take_data(self, view: memoryview) -> memoryview:
        piece = view[: self._remaining]
        self._crc = zlib.crc32(piece, self._crc)
        if self._chunk_type == b"IHDR":
            self._ihdr += piece
        self._remaining -= len(piece)
        if self._remaining == 0:
            self._state = "crc"
        return self._advance(view, len(piece))

    def _take_crc(self, view: memoryview) -> memoryview:
        need = 4 - len(self._crc_bytes)
        piece = bytes(view[:need])
        self._crc_bytes += piece
        view = self._advance(view, len(piece))
        if len(self._crc_bytes) < 4:
            return view
        (stated,) = struct.unpack(">I", bytes(self._crc_bytes))
        self._crc_bytes.clear()
        if stated != self._crc & 0xFFFFFFFF:
            raise PngError(
                f"the {self._chunk_type.decode()} chunk ending at offset {self._offset} fails its CRC"
            )
        if self._chunk_type == b"IHDR":
            self._check_ihdr()
        self._state = "done" if self._chunk_type == b"IEND" else "header"
        return view

    def _check_ihdr(self) -> None:
        width, height, depth, colour, compression, filtering, interlace = struct.unpack(
            ">IIBBBBB", bytes(self._ihdr)
        )
        if not (0 < width <= _MAX_CHUNK_LENGTH and 0 < height <= _MAX_CHUNK_LENGTH):
            raise PngError(f"the image claims {width} x {height} pixels")
        if depth not in _BIT_DEPTHS.get(colour, frozenset()):
            raise PngError(f"colour type {colour} with bit depth {depth} is not a PNG format")
        if compression != 0 or filtering != 0 or interlace not in (0, 1):
            raise PngError("the IHDR chunk names methods PNG does not define")


def check_png(data: bytes) -> None:
    """Raise :class:`PngError` unless ``data`` is a whole, well-formed PNG."""
    checker = PngChecker()
    checker.feed(data)
    checker.finish()
