"""``make demo``'s script, end to end: the example DAG segments the sample images through the emulator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def test_demo_writes_a_cutout_and_a_mask_per_sample(tmp_path: Path) -> None:
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
    assert "4 jobs cost 80 coins" in result.stdout
    from airflow_provider_hitpaw.storage import result_names

    base = result.stdout.split("HitPaw emulator running at ", 1)[1].split()[0]
    for name in ("shoe.jpg", "portrait.png", "product.webp", "mug.jpg"):
        res, mask_name = result_names(f"{base}/samples/{name}")
        with Image.open(out / res) as cutout, Image.open(out / mask_name) as mask:
            assert cutout.mode == "RGBA"
            assert mask.mode == "L"
            assert cutout.size == mask.size
            alpha = cutout.getchannel("A")
            # A cut-out: some pixels kept, some made transparent, exactly where the mask says.
            assert alpha.getextrema() == (0, 255)
            assert list(alpha.getdata()) == list(mask.getdata())
