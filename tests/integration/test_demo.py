"""``make demo``'s script, end to end: the example DAG segments the sample images through the emulator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def test_demo_turns_a_catalogue_into_storefront_images_and_a_contact_sheet(tmp_path: Path) -> None:
    out = tmp_path / "demo-output"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")],
        env={**os.environ, "HITPAW_DEMO_OUTPUT": str(out)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1 suspect(s); 5 jobs cost 100 coins" in result.stdout
    assert "sku-005/main.jpg: cut by the frame's left edge" in result.stdout
    for sku in ("sku-001", "sku-002", "sku-003", "sku-004", "sku-005"):
        folder = out / sku
        with Image.open(folder / "main.png") as cutout, Image.open(folder / "main_mask.png") as mask:
            assert cutout.mode == "RGBA"
            assert mask.mode == "L"
            assert cutout.size == mask.size
            alpha = cutout.getchannel("A")
            # A cut-out: some pixels kept, some made transparent, exactly where the mask says.
            assert alpha.getextrema() == (0, 255)
            assert list(alpha.getdata()) == list(mask.getdata())
        with Image.open(folder / "main.storefront.jpg") as storefront:
            assert (storefront.format, storefront.size) == ("JPEG", (2000, 2000))
            assert storefront.getpixel((0, 0)) == (255, 255, 255)
        with Image.open(folder / "main.thumb.webp") as thumb:
            assert max(thumb.size) == 400
    [sheet] = list(out.glob(".hitpaw-contact-sheets/**/page-001.jpg"))
    assert f"Contact sheet: {sheet}" in result.stdout
