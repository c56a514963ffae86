"""The PNG structure check (_png.py): whole, readable PNGs pass in any slicing; anything else is refused."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from airflow_provider_hitpaw._png import PNG_SIGNATURE, PngChecker, PngError, check_png


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(
    width: int,
    height: int,
    raw: bytes,
    *,
    colour: int = 0,
    depth: int = 8,
    interlace: int = 0,
    extra: bytes = b"",
) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    return (
        PNG_SIGNATURE
        + chunk(b"IHDR", ihdr)
        + extra
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def pillow_png(mode: str, size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("mode", "size"),
    [
        ("RGBA", (300, 200)),
        ("L", (640, 480)),
        ("P", (33, 17)),
        ("RGB", (1, 1)),
        ("LA", (5, 7)),
        ("1", (13, 5)),
    ],
)
@pytest.mark.parametrize("step", [1, 7, 4096, 10**9])
def test_real_pngs_pass_in_any_slicing(mode: str, size: tuple[int, int], step: int) -> None:
    data = pillow_png(mode, size)
    checker = PngChecker()
    for start in range(0, len(data), step):
        checker.feed(data[start : start + step])
    checker.finish()
    assert checker.complete


def test_an_interlaced_png_passes() -> None:
    """Adam7: seven passes of their own sizes (5 x 3 grey: 3, 2, 1, 1, 3, 1 and 6 filtered bytes)."""
    width, height = 5, 3
    passes = [
        (0, 0, 8, 8),
        (4, 0, 8, 8),
        (0, 4, 4, 8),
        (2, 0, 4, 4),
        (0, 2, 2, 4),
        (1, 0, 2, 2),
        (0, 1, 1, 2),
    ]
    raw = b""
    for x0, y0, dx, dy in passes:
        columns = len(range(x0, width, dx))
        rows = len(range(y0, height, dy))
        if columns and rows:
            raw += (b"\x00" + b"\x7f" * columns) * rows
    check_png(png(width, height, raw, interlace=1))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(
            PNG_SIGNATURE + b"<html><body>Service Unavailable</body></html>", "", id="signature-then-html"
        ),
        pytest.param(pillow_png("L", (4, 4)) + b"<html>", "follow the IEND", id="trailing-bytes"),
        pytest.param(pillow_png("L", (4, 4))[:-1], "ends at offset", id="truncated"),
        pytest.param(b"", "empty", id="empty"),
        pytest.param(b"GIF89a", "signature", id="gif"),
        pytest.param(png(2**31 - 1, 2**31 - 1, b""), "more than any photo", id="bomb-dimensions"),
        pytest.param(png(4, 4, b"<html>not pixels</html>"), "calls for", id="html-inside-idat"),
        pytest.param(png(4, 4, (b"\x00" + b"\x00" * 4) * 5), "more than", id="too-much-image-data"),
        pytest.param(png(4, 4, (b"\x00" + b"\x00" * 4) * 3), "calls for", id="too-little-image-data"),
        pytest.param(png(4, 4, (b"\x00" + b"\x00" * 4) * 4, colour=3), "palette", id="palette-without-plte"),
        pytest.param(
            png(4, 4, (b"\x00" + b"\x00" * 4) * 4, extra=chunk(b"XYZW", b"?")),
            "critical",
            id="unknown-critical",
        ),
        pytest.param(png(4, 4, b"", colour=2, depth=4), "bit depth", id="bad-depth"),
    ],
)
def test_what_is_not_a_whole_readable_png_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(PngError, match=reason):
        check_png(data)


def test_a_crc_mismatch_is_found() -> None:
    data = bytearray(pillow_png("L", (4, 4)))
    data[20] ^= 1  # inside IHDR
    with pytest.raises(PngError, match="CRC"):
        check_png(bytes(data))


def test_unknown_ancillary_chunks_are_fine() -> None:
    check_png(png(4, 4, (b"\x00" + b"\x00" * 4) * 4, extra=chunk(b"prVt", b"anything")))
