"""Inputs shaped like real ones: a product catalogue where every folder holds a ``main.jpg``, folder names
in several scripts, every photo with bytes of its own."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import requests

#: Product folders as shops name them: SKUs, and names in Latin, CJK, Cyrillic, Arabic, Devanagari, emoji.
PRODUCT_FOLDERS = (
    "sku-000123",
    "Sommerschuh Größe 42",
    "运动鞋-白色",
    "кроссовки-чёрные",
    "حذاء رياضي",
    "जूते-नीले",
    "👟 limited",
    "sku-000123 (copy)",
)


def unique_copy(image: bytes, suffix: str, n: int) -> bytes:
    """The image with bytes of its own that no decoder looks at: a PNG text chunk after the header, or
    data after a JPEG's end; other formats stay as they are."""
    if suffix == ".png":
        data = b"tEXt" + f"copy\0{n}".encode()
        chunk = struct.pack(">I", len(data) - 4) + data + struct.pack(">I", zlib.crc32(data))
        return image[:33] + chunk + image[33:]
    if suffix == ".jpg":
        return image + f"copy {n}".encode()
    return image


def make_catalogue(root: Path, sample_url: str, folders: tuple[str, ...] = PRODUCT_FOLDERS) -> list[Path]:
    """One ``main.jpg`` per product folder under ``root``, each a distinct photo; their paths, in order."""
    photo = requests.get(sample_url, timeout=10).content
    paths = []
    for n, folder in enumerate(folders):
        path = root / folder / "main.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(unique_copy(photo, ".jpg", n))
        paths.append(path)
    return paths
