"""A PNG's structure, checked as its bytes stream past, without decoding a pixel.

A result link that answers with the PNG signature followed by an HTML error page must not be kept as a
cut-out. Checking the signature alone would keep it; decoding the image would need Pillow on every worker
and memory for every pixel. Walking the chunks (IHDR first, each length and CRC, PLTE where a palette is
needed, IDATs together, IEND last and nothing after it) and inflating the image data only to count it
(exactly the bytes its size and format call for) proves the file is a whole, readable PNG at the cost of
a CRC and an inflate over its bytes, in constant memory. A size beyond any photo (more than
:data:`MAX_PIXELS` pixels) is refused: such a file is a decompression bomb for whatever opens it next.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any, Final

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"

#: PNG's own limit on a chunk's length (2**31 - 1).
_MAX_CHUNK_LENGTH: Final = 0x7FFFFFFF
#: The most pixels a result may have: a cut-out is the size of its photo, and 400 megapixels is beyond any
#: camera's (a 2**31 x 2**31 PNG of 65 bytes would otherwise pass as a well-formed file).
MAX_PIXELS: Final = 400_000_000
#: Channels per colour type.
_CHANNELS: Final[dict[int, int]] = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
#: Critical chunks PNG defines; another critical one (an upper-case first letter) cannot be read.
_CRITICAL: Final = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND"})
#: The Adam7 passes: first column, first row, column step, row step.
_ADAM7: Final = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)
_INFLATE_STEP: Final = 64 * 1024
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
        self._idat_done = False
        self._seen_plte = False
        self._colour = 0
        self._expected = 0  # bytes the image data must inflate to
        self._inflated = 0
        self._inflater: Any = None

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
        if chunk_type[0] < 97 and chunk_type not in _CRITICAL:  # upper case: critical
            raise PngError(f"the critical chunk {chunk_type!r} at offset {where} is not one PNG defines")
        if chunk_type == b"IDAT":
            if self._idat_done:
                raise PngError(f"an IDAT chunk at offset {where} after other chunks followed the image data")
            if self._colour == 3 and not self._seen_plte:
                raise PngError("a palette image without its palette (PLTE) before the image data")
            self._seen_idat = True
        elif self._seen_idat:
            self._idat_done = True
        if chunk_type == b"PLTE":
            self._seen_plte = True
        if chunk_type == b"IEND":
            self._finish_image_data()
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
        elif self._chunk_type == b"IDAT":
            self._inflate(bytes(piece))
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
        if width * height > MAX_PIXELS:
            raise PngError(f"the image claims {width} x {height} pixels, more than any photo has")
        bits = depth * _CHANNELS[colour]
        passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
        for x0, y0, dx, dy in passes:
            columns = (width - x0 + dx - 1) // dx if width > x0 else 0
            rows = (height - y0 + dy - 1) // dy if height > y0 else 0
            if columns and rows:
                self._expected += rows * (1 + (columns * bits + 7) // 8)  # a filter byte per row
        self._colour = colour
        self._inflater = zlib.decompressobj()

    def _inflate(self, data: bytes) -> None:
        """Inflate image data only to count it: never more than it may hold, a step at a time."""
        if self._inflater is None:
            return
        while data:
            try:
                out = self._inflater.decompress(data, _INFLATE_STEP)
            except zlib.error as err:
                raise PngError(f"the image data is not validly compressed ({err})") from None
            self._inflated += len(out)
            if self._inflated > self._expected:
                raise PngError(
                    f"the image data holds more than the {self._expected} bytes its header calls for"
                )
            data = self._inflater.unconsumed_tail
            if self._inflater.eof and (data or self._inflater.unused_data):
                raise PngError("bytes follow the end of the compressed image data")

    def _finish_image_data(self) -> None:
        if self._inflater is None:
            return
        try:
            self._inflated += len(self._inflater.flush())
        except zlib.error as err:
            raise PngError(f"the image data is not validly compressed ({err})") from None
        if not self._inflater.eof or self._inflated != self._expected:
            raise PngError(
                f"the image data inflates to {self._inflated} bytes where its header calls for "
                f"{self._expected}"
            )


def check_png(data: bytes) -> None:
    """Raise :class:`PngError` unless ``data`` is a whole, well-formed PNG."""
    checker = PngChecker()
    checker.feed(data)
    checker.finish()
