"""The contact sheet: pages of input, cut-out and finish, suspects first and framed, drawn from what is
kept (checked on images with known pixels)."""

from __future__ import annotations

import io
from typing import Any

import pytest

from airflow_provider_hitpaw import _contact_sheet as sheet

Image = pytest.importorskip("PIL.Image")


def png(size: tuple[int, int], colour: tuple[int, ...], mode: str = "RGBA") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, colour).save(out, "PNG")
    return out.getvalue()


def entry(label: str, suspect: str | None = None, cutout: bytes | None = None) -> sheet.SheetEntry:
    return sheet.SheetEntry(
        label=label,
        suspect=suspect,
        original=lambda: png((300, 200), (0, 0, 255, 255)),
        cutout=lambda: cutout,
        finish=lambda: png((100, 100), (255, 255, 255, 255)),
    )


def first_cell(page: Any) -> tuple[int, int]:
    return sheet.GAP, sheet.LABEL_HEIGHT + sheet.GAP


def near(pixel: tuple[int, ...], colour: tuple[int, int, int], slack: int = 40) -> bool:
    return all(abs(a - b) <= slack for a, b in zip(pixel[:3], colour, strict=True))


def test_a_large_batch_is_paged() -> None:
    entries = [entry(f"sku-{n}/main.jpg") for n in range(30)]
    assert len(list(sheet.pages(entries, per_page=12))) == 3


def test_suspects_come_first_and_are_framed_in_red() -> None:
    entries = [entry("sku-1/main.jpg"), entry("sku-2/main.jpg", suspect="nearly empty")]
    assert [e.label for e in sheet.ordered(entries)] == ["sku-2/main.jpg", "sku-1/main.jpg"]
    [page_bytes] = list(sheet.pages(entries))
    page = Image.open(io.BytesIO(page_bytes)).convert("RGB")
    x, y = first_cell(page)
    assert near(page.getpixel((x - 2, y + 40)), sheet.SUSPECT_RED)
    second_x = x + 3 * sheet.PANEL + 8 + sheet.GAP
    assert near(page.getpixel((second_x - 2, y + 40)), (255, 255, 255))


def test_a_see_through_cut_out_shows_the_checkerboard_and_the_input_shows_as_it_is() -> None:
    [page_bytes] = list(sheet.pages([entry("a.jpg", cutout=png((200, 200), (0, 0, 0, 0)))]))
    page = Image.open(io.BytesIO(page_bytes)).convert("RGB")
    x, y = first_cell(page)
    cutout_x = x + sheet.PANEL + 4
    assert near(page.getpixel((cutout_x + 3, y + 3)), (255, 255, 255))
    assert near(page.getpixel((cutout_x + 15, y + 3)), (204, 204, 204))
    assert near(page.getpixel((x + sheet.PANEL // 2, y + sheet.PANEL // 2)), (0, 0, 255))


def test_what_cannot_be_read_is_a_grey_panel_not_a_failed_sheet() -> None:
    def broken() -> bytes:
        raise OSError("gone")

    unreadable = sheet.SheetEntry("a.jpg", None, broken, lambda: b"not an image", lambda: None)
    [page_bytes] = list(sheet.pages([unreadable]))
    page = Image.open(io.BytesIO(page_bytes)).convert("RGB")
    x, y = first_cell(page)
    assert near(page.getpixel((x + 100, y + 100)), (200, 200, 200), slack=10)


def test_entries_come_from_results_that_kept_a_cut_out() -> None:
    results = [
        {"file_url": "https://h.test/raw/sku-1/main.jpg", "res_path": "file:///out/sku-1/main.png"},
        {"file_url": "https://h.test/raw/sku-2/main.jpg", "res_path": None, "status": "ERROR"},
        {"source_path": "/raw/sku-3/main.jpg", "res_path": "file:///out/sku-3/main.png", "suspect": "x"},
    ]
    results[0]["mask_path"] = "file:///out/sku-1/main_mask.png"
    kept: list[str] = []
    sources: list[str] = []
    entries = sheet.sheet_entries(
        results, lambda uri: kept.append(uri) or None, lambda i: sources.append(i) or None
    )
    assert [(e.label, e.suspect) for e in entries] == [("sku-1/main.jpg", None), ("sku-3/main.jpg", "x")]
    entries[0].original()
    entries[1].original()
    entries[1].cutout()
    assert kept == ["file:///out/sku-1/main_mask.png", "file:///out/sku-3/main.png"]
    assert sources == ["/raw/sku-3/main.jpg"]
