"""Suspect cut-outs flagged from their mask, cheaply: nearly empty, nearly everything, cut by the frame,
in pieces.

A segmentation that went wrong still comes back COMPLETED and costs the same; a person looking at a
thousand cut-outs misses the bad ones. A few figures of the mask (a 12 MP mask takes tens of
milliseconds) point at the ones worth a look. Pillow only (the ``finish`` extra): connected pieces are
labelled here, over runs of a downscaled copy, rather than with SciPy or OpenCV.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from airflow_provider_hitpaw._finish import SUBJECT_THRESHOLD, load_as, open_image
from airflow_provider_hitpaw.exceptions import HitPawConfigurationError

#: Long side of the copy pieces and edges are judged on: enough for any piece worth counting.
WORK_SIDE: Final = 512
#: A piece smaller than this share of the frame is a speck (dust, a stray hair), not a piece.
MIN_PIECE_SHARE: Final = 0.001
#: A subject touches an edge when this share of the edge (at least one pixel of the copy) is subject:
#: a corner grazing the frame is not a subject cut by it.
MIN_CONTACT_SHARE: Final = 0.01
EDGES: Final = ("top", "bottom", "left", "right")


@dataclass(frozen=True)
class MaskFigures:
    """What a mask says of its cut-out's subject. ``box`` is what a crop keeps (left, top, right,
    bottom; right and bottom exclusive), in the mask's pixels; None when nothing is subject."""

    subject_share: float
    touches: tuple[str, ...]
    pieces: int
    width: int
    height: int
    box: tuple[int, int, int, int] | None


def measure_mask(mask: bytes) -> MaskFigures:
    """The mask's figures: share and box exact, at full size; pieces and edges on a copy whose long side
    is at most :data:`WORK_SIDE`, where a block is subject if any pixel in it is (so thin parts stay
    joined, and an edge is touched when the subject comes within one block of it)."""
    matte = load_as(open_image(mask, what="mask", formats=("PNG",)), "L", "mask")
    width, height = matte.size
    binary = matte.point([0] * (SUBJECT_THRESHOLD + 1) + [255] * (255 - SUBJECT_THRESHOLD))
    histogram = binary.histogram()
    share = histogram[255] / (width * height)
    box = binary.getbbox()
    if box is None:
        return MaskFigures(0.0, (), 0, width, height, None)
    factor = math.ceil(max(width, height) / WORK_SIDE)
    small = binary if factor == 1 else binary.reduce(factor).point([0] + [255] * 255)
    pieces, touches = _pieces(small.tobytes(), *small.size)
    return MaskFigures(share, touches, pieces, width, height, box)


def _pieces(pixels: bytes, width: int, height: int) -> tuple[int, tuple[str, ...]]:
    """How many 8-connected pieces the 0/255 image has above the speck size, and the edges they touch.

    Runs of subject pixels are found row by row (``bytes.find``, at C speed) and joined with the runs
    of the row above that they touch, in a union-find: the work grows with the runs, not the pixels.
    """
    parent: list[int] = []
    area: list[int] = []
    # Per run: contact with top, bottom, left, right.
    contact: list[list[int]] = []
    previous: list[tuple[int, int, int]] = []  # (start, end, run id) of the row above
    subject, background = b"\xff", b"\x00"

    def root(run: int) -> int:
        while parent[run] != run:
            parent[run] = parent[parent[run]]
            run = parent[run]
        return run

    for y in range(height):
        row = pixels[y * width : (y + 1) * width]
        current: list[tuple[int, int, int]] = []
        start = row.find(subject)
        above = 0
        while start != -1:
            end = row.find(background, start)
            if end == -1:
                end = width
            run = len(parent)
            parent.append(run)
            area.append(end - start)
            contact.append(
                [
                    end - start if y == 0 else 0,
                    end - start if y == height - 1 else 0,
                    1 if start == 0 else 0,
                    1 if end == width else 0,
                ]
            )
            # The runs above that touch this one, diagonals included: they end at or after start - 1.
            while above < len(previous) and previous[above][1] < start:
                above += 1
            other = above
            while other < len(previous) and previous[other][0] <= end:
                a, b = root(previous[other][2]), root(run)
                if a != b:
                    parent[max(a, b)] = min(a, b)
                other += 1
            current.append((start, end, run))
            start = row.find(subject, end) if end < width else -1
        previous = current

    totals: dict[int, list[int]] = {}
    for run in range(len(parent)):
        piece = totals.setdefault(root(run), [0, 0, 0, 0, 0])
        piece[0] += area[run]
        for edge in range(4):
            piece[edge + 1] += contact[run][edge]
    min_area = max(1, math.ceil(MIN_PIECE_SHARE * width * height))
    kept = [piece for piece in totals.values() if piece[0] >= min_area]
    lengths = (width, width, height, height)
    touches = tuple(
        edge
        for index, edge in enumerate(EDGES)
        if sum(piece[index + 1] for piece in kept) >= max(1, math.ceil(MIN_CONTACT_SHARE * lengths[index]))
    )
    return len(kept), touches


def suspect_reason(
    figures: MaskFigures,
    *,
    min_share: float = 0.02,
    max_share: float = 0.95,
    max_pieces: int = 3,
    edges: bool = True,
) -> str | None:
    """Why this cut-out deserves a look, or None. A subject touching only the bottom edge is not
    suspect: products stand on it and portraits are cut there by design. Touching the top, left or
    right edge is (the subject likely goes on beyond the frame); ``edges=False`` ignores edges."""
    if not 0.0 <= min_share < max_share <= 1.0:
        raise HitPawConfigurationError(
            "min_share",
            f"must be at least 0 and below max_share (at most 1), not {min_share} and {max_share}",
        )
    if isinstance(max_pieces, bool) or not isinstance(max_pieces, int) or max_pieces < 1:
        raise HitPawConfigurationError(
            "max_pieces", f"must be a whole number of at least 1, not {max_pieces!r}"
        )
    share = figures.subject_share
    if share == 0.0:
        return "nearly empty: the mask holds no subject at all"
    if share < min_share:
        return f"nearly empty: subject is {_percent(share)} of the frame"
    if share > max_share:
        return f"nearly everything: subject is {_percent(share)} of the frame"
    reasons = []
    if edges and set(figures.touches) - {"bottom"}:
        reasons.append(
            f"cut by the frame's {_listed(figures.touches)} edge{'s' if len(figures.touches) > 1 else ''}"
        )
    if figures.pieces > max_pieces:
        reasons.append(f"{figures.pieces} separate pieces")
    return "; ".join(reasons) or None


def _percent(share: float) -> str:
    text = f"{share:.1%}"
    if text in ("0.0%", "100.0%") and 0.0 < share < 1.0:
        return "under 0.1%" if share < 0.5 else "over 99.9%"
    return text


def _listed(words: tuple[str, ...]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


#: The figures' own format in a record: another version's are measured again.
FIGURES_VERSION: Final = 1


def suspect_reason_of(figures: dict[str, Any]) -> str | None:
    """:func:`suspect_reason` of figures as :func:`figures_as_dict` gave them (a record, XCom)."""
    box = figures.get("box")
    return suspect_reason(
        MaskFigures(
            float(figures.get("subject_share") or 0.0),
            tuple(str(edge) for edge in figures.get("touches") or ()),
            int(figures.get("pieces") or 0),
            int(figures.get("width") or 0),
            int(figures.get("height") or 0),
            (box[0], box[1], box[2], box[3]) if isinstance(box, list) and len(box) == 4 else None,
        )
    )


def figures_as_dict(figures: MaskFigures) -> dict[str, Any]:
    """The figures for XCom: small and JSON-safe (lists for tuples, the share to 4 decimals)."""
    return {
        "subject_share": round(figures.subject_share, 4),
        "touches": list(figures.touches),
        "pieces": figures.pieces,
        "width": figures.width,
        "height": figures.height,
        "box": list(figures.box) if figures.box is not None else None,
    }
