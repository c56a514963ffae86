"""A batch's contact sheet: every input beside its cut-out (on a checkerboard, so a hole shows) and its
first finish, suspects first and framed in red, in JPEG pages a person can flip through.

Pillow does the work (the ``[finish]`` extra); it is imported where pages are drawn, never at import.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from PIL import Image as PILImage

#: What a panel shows is read only when its page is drawn: a page's images at a time in memory.
Loader = Callable[[], bytes | None]

PANEL: Final = 200
COLUMNS: Final = 2
ROWS: Final = 6
LABEL_HEIGHT: Final = 22
GAP: Final = 12
SUSPECT_RED: Final = (220, 30, 30)
#: Pixels an image to be drawn may have at most (a decompression bomb is no thumbnail).
MAX_PIXELS: Final = 50_000_000
_CHECKER: Final = 12
_PANELS: Final = 3


@dataclass(frozen=True)
class SheetEntry:
    """One input on the sheet: a label without credentials, why it is suspect (or None), and its
    input, cut-out and first finish, read when drawn (None: a grey panel)."""

    label: str
    suspect: str | None
    original: Loader
    cutout: Loader
    finish: Loader


def ordered(entries: Sequence[SheetEntry]) -> list[SheetEntry]:
    """Suspects first, each group in the batch's order: what a person must look at comes first."""
    return [e for e in entries if e.suspect] + [e for e in entries if not e.suspect]


def pages(entries: Sequence[SheetEntry], *, per_page: int = COLUMNS * ROWS) -> Iterator[bytes]:
    """The sheet's pages as JPEG bytes, ``per_page`` inputs each, suspects first."""
    order = ordered(entries)
    for start in range(0, len(order), per_page):
        yield _page(order[start : start + per_page], start // per_page + 1, -(-len(order) // per_page))


def _page(entries: Sequence[SheetEntry], number: int, count: int) -> bytes:
    from PIL import Image, ImageDraw

    cell_w = _PANELS * PANEL + (_PANELS - 1) * 4
    cell_h = PANEL + LABEL_HEIGHT
    rows = -(-len(entries) // COLUMNS)
    width = COLUMNS * cell_w + (COLUMNS + 1) * GAP
    height = rows * cell_h + (rows + 1) * GAP + LABEL_HEIGHT
    page = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(page)
    draw.text(
        (GAP, 4),
        f"page {number} of {count}: input (or mask), cut-out, first finish (or mask)",
        fill=(60, 60, 60),
    )
    for index, entry in enumerate(entries):
        x = GAP + (index % COLUMNS) * (cell_w + GAP)
        y = LABEL_HEIGHT + GAP + (index // COLUMNS) * (cell_h + GAP)
        for panel, loader in enumerate((entry.original, entry.cutout, entry.finish)):
            picture = _thumbnail(loader, checker=panel == 1)
            page.paste(picture, (x + panel * (PANEL + 4), y))
        text = f"{entry.label} - {entry.suspect}" if entry.suspect else entry.label
        draw.text(
            (x, y + PANEL + 4),
            _printable(text, cell_w // 6),
            fill=SUSPECT_RED if entry.suspect else (0, 0, 0),
        )
        if entry.suspect:
            draw.rectangle((x - 4, y - 4, x + cell_w + 3, y + cell_h + 3), outline=SUSPECT_RED, width=4)
    out = io.BytesIO()
    page.save(out, "JPEG", quality=82)
    return out.getvalue()


def _thumbnail(loader: Loader, *, checker: bool) -> PILImage.Image:
    """A panel: the image scaled into it, centred; on a checkerboard where it is see-through."""
    from PIL import Image

    panel = _checkerboard() if checker else Image.new("RGB", (PANEL, PANEL), (255, 255, 255))
    try:
        data = loader()
        if not data:
            raise ValueError("nothing to show")
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PIXELS:
                raise ValueError("too large to draw")
            image.draft("RGB", (PANEL, PANEL))  # JPEG: decode at a fraction of the size
            picture = image.convert("RGBA")
    except Exception:  # an input that cannot be read is shown as missing, not a failed sheet
        return Image.new("RGB", (PANEL, PANEL), (200, 200, 200))
    picture.thumbnail((PANEL, PANEL))
    offset = ((PANEL - picture.width) // 2, (PANEL - picture.height) // 2)
    panel.paste(picture, offset, picture)
    return panel


def _checkerboard() -> PILImage.Image:
    from PIL import Image, ImageDraw

    board = Image.new("RGB", (PANEL, PANEL), (255, 255, 255))
    draw = ImageDraw.Draw(board)
    for row in range(0, PANEL, _CHECKER):
        for column in range(0, PANEL, _CHECKER):
            if (row // _CHECKER + column // _CHECKER) % 2:
                draw.rectangle((column, row, column + _CHECKER - 1, row + _CHECKER - 1), fill=(204, 204, 204))
    return board


def _printable(text: str, limit: int) -> str:
    """Pillow's built-in font draws Latin-1 only: other letters become ``?``, and a long name is cut."""
    shown = text.encode("latin-1", errors="replace").decode("latin-1")
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def sheet_entries(
    results: Sequence[dict[str, Any]],
    read_kept: Callable[[str], bytes | None],
    read_source: Callable[[str], bytes | None],
) -> list[SheetEntry]:
    """Entries for a batch's results that kept a cut-out. The first panel is the stored source, or for
    a URL input (not fetched again for a thumbnail) its kept mask; the last, the first finish, or the
    mask where there is none."""
    entries = []
    for result in results:
        cutout = result.get("res_path")
        if not isinstance(cutout, str) or not cutout:
            continue
        finishes = result.get("finishes") or {}
        first = next(iter(finishes.values()), None) if isinstance(finishes, dict) else None
        source = result.get("source_path")
        mask = _reader(read_kept, result.get("mask_path"))
        original = _reader(read_source, source) if source else mask
        shown = str(source or result.get("file_url") or cutout).replace("\\", "/").rsplit("/", 2)[-2:]
        suspect = result.get("suspect")
        entries.append(
            SheetEntry(
                label="/".join(shown),
                suspect=suspect if isinstance(suspect, str) else None,
                original=original,
                cutout=_reader(read_kept, cutout),
                finish=_reader(read_kept, first) if first else mask,
            )
        )
    return entries


def _reader(read: Callable[[str], bytes | None], uri: Any) -> Loader:
    return (lambda: read(uri)) if isinstance(uri, str) and uri else (lambda: None)
