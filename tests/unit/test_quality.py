"""Suspect cut-outs (_quality.py): masks made to be wrong are flagged, good ones are not."""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from airflow_provider_hitpaw._finish import UnusableImageError
from airflow_provider_hitpaw._quality import (
    MaskFigures,
    _pieces,
    figures_as_dict,
    measure_mask,
    suspect_reason,
)
from airflow_provider_hitpaw.exceptions import HitPawConfigurationError

FRAME = (400, 300)


def mask_png(frame: tuple[int, int] = FRAME, *boxes: tuple[int, int, int, int], value: int = 255) -> bytes:
    """A mask with each ``box`` (left, top, right, bottom; right and bottom exclusive) filled."""
    image = Image.new("L", frame, 0)
    draw = ImageDraw.Draw(image)
    for left, top, right, bottom in boxes:
        draw.rectangle((left, top, right - 1, bottom - 1), fill=value)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def test_one_centred_subject_is_fine() -> None:
    figures = measure_mask(mask_png(FRAME, (100, 50, 300, 250)))
    assert figures == MaskFigures(
        subject_share=200 * 200 / (400 * 300),
        touches=(),
        pieces=1,
        width=400,
        height=300,
        box=(100, 50, 300, 250),
    )
    assert suspect_reason(figures) is None


def test_an_empty_mask_is_suspect() -> None:
    figures = measure_mask(mask_png())
    assert figures == MaskFigures(0.0, (), 0, 400, 300, None)
    assert suspect_reason(figures) == "nearly empty: the mask holds no subject at all"


def test_a_tiny_subject_is_nearly_empty() -> None:
    figures = measure_mask(mask_png(FRAME, (190, 140, 214, 160)))  # 24 x 20 = 480 px, 0.4%
    assert figures.subject_share == pytest.approx(0.004)
    assert suspect_reason(figures) == "nearly empty: subject is 0.4% of the frame"
    assert suspect_reason(figures, min_share=0.001) is None


def test_a_full_frame_is_nearly_everything() -> None:
    figures = measure_mask(mask_png(FRAME, (0, 0, 400, 300)))
    assert figures.subject_share == 1.0
    assert figures.touches == ("top", "bottom", "left", "right")
    assert suspect_reason(figures) == "nearly everything: subject is 100.0% of the frame"


def test_a_subject_cut_by_the_top_and_left_edges_is_suspect() -> None:
    figures = measure_mask(mask_png(FRAME, (0, 0, 200, 150)))
    assert figures.touches == ("top", "left")
    assert suspect_reason(figures) == "cut by the frame's top and left edges"
    assert suspect_reason(figures, edges=False) is None


def test_a_subject_touching_only_the_bottom_is_fine() -> None:
    figures = measure_mask(mask_png(FRAME, (120, 60, 280, 300)))  # a bottle standing on the frame's bottom
    assert figures.touches == ("bottom",)
    assert suspect_reason(figures) is None


def test_a_corner_grazing_an_edge_is_no_cut() -> None:
    figures = measure_mask(mask_png(FRAME, (100, 50, 300, 250), (299, 0, 301, 50)))  # a 2 px whisker
    assert figures.touches == ()


def test_seven_blobs_are_seven_pieces() -> None:
    blobs = [(20 + 54 * i, 120, 60 + 54 * i, 170) for i in range(7)]
    figures = measure_mask(mask_png(FRAME, *blobs))
    assert figures.pieces == 7
    assert suspect_reason(figures) == "7 separate pieces"
    assert suspect_reason(figures, max_pieces=7) is None


def test_noise_specks_are_not_pieces_nor_edge_contacts() -> None:
    specks = [(10 + 37 * i, 10 + 13 * (i % 5), 12 + 37 * i, 12 + 13 * (i % 5)) for i in range(10)]
    on_edges = [(0, 200, 2, 202), (398, 100, 400, 102), (50, 0, 52, 2)]
    figures = measure_mask(mask_png(FRAME, (120, 80, 280, 240), *specks, *on_edges))
    assert figures.pieces == 1
    assert figures.touches == ()
    assert figures.box == (0, 0, 400, 240)  # the box a crop takes counts every subject pixel
    assert suspect_reason(figures) is None


def test_pieces_touching_at_a_corner_are_one() -> None:
    assert measure_mask(mask_png(FRAME, (100, 100, 150, 150), (150, 150, 200, 200))).pieces == 1


@pytest.mark.parametrize(
    "boxes",
    [
        # A U: two arms that only meet in the row the scan reaches last.
        [(100, 50, 130, 250), (270, 50, 300, 250), (100, 220, 300, 250)],
        # An N: the second arm meets the first only through the diagonal bar, met from the other side.
        [
            (50, 50, 80, 250),
            (80, 50, 110, 80),
            (110, 50, 140, 250),
            (140, 220, 170, 250),
            (170, 50, 200, 250),
        ],
    ],
)
def test_shapes_joined_late_in_the_scan_are_one_piece(boxes: list[tuple[int, int, int, int]]) -> None:
    assert measure_mask(mask_png(FRAME, *boxes)).pieces == 1


def test_a_large_mask_is_measured_on_a_small_copy_without_breaking_thin_parts() -> None:
    frame = (4000, 3000)
    # Two blocks joined by a 1 px wire: downscaled by averaging, the wire would vanish.
    figures = measure_mask(
        mask_png(frame, (500, 1000, 1500, 2000), (2500, 1000, 3500, 2000), (1500, 1500, 2500, 1501))
    )
    assert figures.pieces == 1
    assert figures.box == (500, 1000, 3500, 2000)
    assert (figures.width, figures.height) == frame
    seven = [(200 + 520 * i, 1000, 600 + 520 * i, 1500) for i in range(7)]
    assert measure_mask(mask_png(frame, *seven)).pieces == 7


def test_a_soft_mask_counts_from_the_midpoint() -> None:
    assert measure_mask(mask_png(FRAME, (100, 50, 300, 250), value=127)).subject_share == 0.0
    assert measure_mask(mask_png(FRAME, (100, 50, 300, 250), value=128)).pieces == 1


def _reference_pieces(pixels: list[list[bool]], min_area: int) -> int:
    """Pieces by breadth-first flood fill, 8-connected: slow and obvious."""
    height, width = len(pixels), len(pixels[0])
    seen = [[False] * width for _ in range(height)]
    count = 0
    for y in range(height):
        for x in range(width):
            if not pixels[y][x] or seen[y][x]:
                continue
            seen[y][x] = True
            queue, area = deque([(y, x)]), 0
            while queue:
                cy, cx = queue.popleft()
                area += 1
                for ny in range(cy - 1, cy + 2):
                    for nx in range(cx - 1, cx + 2):
                        if 0 <= ny < height and 0 <= nx < width and pixels[ny][nx] and not seen[ny][nx]:
                            seen[ny][nx] = True
                            queue.append((ny, nx))
            count += area >= min_area
    return count


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 24).flatmap(
        lambda width: st.lists(
            st.lists(st.booleans(), min_size=width, max_size=width), min_size=1, max_size=24
        )
    )
)
def test_labelling_agrees_with_a_flood_fill(pixels: list[list[bool]]) -> None:
    height, width = len(pixels), len(pixels[0])
    data = bytes(255 if value else 0 for row in pixels for value in row)
    pieces, _ = _pieces(data, width, height)
    assert pieces == _reference_pieces(pixels, 1)  # below 1,000 pixels the speck size is one pixel


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_a_mask_over_50_megapixels_is_refused_from_its_header() -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 10_000, 10_000, 8, 0, 0, 0, 0))
    with pytest.raises(UnusableImageError, match="over 50 megapixels"):
        measure_mask(header + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b""))


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"min_share": 0.5, "max_share": 0.4}, "min_share"),
        ({"min_share": -0.1}, "min_share"),
        ({"max_share": 1.5}, "min_share"),
        ({"max_pieces": 0}, "max_pieces"),
        ({"max_pieces": True}, "max_pieces"),
    ],
)
def test_bad_thresholds_are_refused(options: dict[str, float], field: str) -> None:
    figures = MaskFigures(0.5, (), 1, 10, 10, (0, 0, 5, 5))
    with pytest.raises(HitPawConfigurationError, match=field):
        suspect_reason(figures, **options)  # type: ignore[arg-type]


def test_several_reasons_are_said_together() -> None:
    figures = MaskFigures(0.3, ("top", "left", "right"), 5, 400, 300, (0, 0, 400, 200))
    assert suspect_reason(figures) == "cut by the frame's top, left and right edges; 5 separate pieces"


def test_shares_are_written_readably() -> None:
    assert (
        suspect_reason(MaskFigures(0.0004, (), 1, 10, 10, None))
        == "nearly empty: subject is under 0.1% of the frame"
    )
    assert suspect_reason(MaskFigures(0.99999, (), 1, 10, 10, None)) == (
        "nearly everything: subject is over 99.9% of the frame"
    )


def test_figures_as_dict_is_small_and_json_safe() -> None:
    figures = measure_mask(mask_png(FRAME, (0, 0, 200, 150)))
    data = figures_as_dict(figures)
    assert data == {
        "subject_share": 0.25,
        "touches": ["top", "left"],
        "pieces": 1,
        "width": 400,
        "height": 300,
        "box": [0, 0, 200, 150],
    }
    assert json.loads(json.dumps(data)) == data
    assert figures_as_dict(measure_mask(mask_png()))["box"] is None
