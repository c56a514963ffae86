"""What storefront finishes cost on a worker: ``apply_finish`` against the same work in plain Pillow calls.

For N kept pairs (cut-out and mask) at two sizes, 1024x1024 and a 12 MP 4000x3000 photo-like image, each
image gets a storefront finish (white, cropped to the subject, 2000x2000 canvas at 85%, JPEG 90) and a
thumb (WebP, 400 px): by ``apply_finish`` once per finish, and by ``apply_finishes`` (one decode of the
pair for both). Printed per size, side by side with the hand-written baseline: images per second per
core (CPU time, one process), wall time, peak RSS of a fresh process (and its RSS before the work), and
the bytes written; then how long ``measure_mask`` takes per mask. Nothing is asserted.

    .venv/bin/python benchmarks/finishing.py [--images 24] [--smoke]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import run_child

SIZES = {"1024x1024": (1024, 1024), "4000x3000": (4000, 3000)}
#: Distinct images made per size (at most N); the N measured cycle through them (a 12 MP one takes seconds).
VARIANTS = 3
KEYS = ["images_per_cpu_s", "cpu_s", "wall_s", "rss_before_mib", "peak_rss_mib", "output_kib"]
FINISHES = {
    "storefront": {
        "background": "white",
        "crop": True,
        "canvas": "2000x2000",
        "fill": 0.85,
        "format": "jpeg",
        "quality": 90,
    },
    "thumb": {"format": "webp", "max_side": 400},
}


def make_pair(size: tuple[int, int], seed: int) -> tuple[bytes, bytes]:
    """A photo-like cut-out (gradients, sensor noise; a soft-edged subject off centre) and its mask."""
    from PIL import Image, ImageChops, ImageDraw, ImageFilter

    width, height = size
    gradient = Image.linear_gradient("L")
    noise = Image.effect_noise(size, 8)
    channels = [
        ImageChops.add(
            gradient.rotate(90 * ((seed + band) % 4)).resize(size, Image.Resampling.BILINEAR),
            noise.point(lambda v, band=band: max(0, v - 88 - 8 * band)),
            scale=1.4,
            offset=20 * band,
        )
        for band in range(3)
    ]
    rgb = Image.merge("RGB", channels)
    mask = Image.new("L", size, 0)
    cx, cy = width * (0.45 + 0.05 * seed), height * 0.5
    ImageDraw.Draw(mask).ellipse(
        (cx - width * 0.25, cy - height * 0.35, cx + width * 0.22, cy + height * 0.33), fill=255
    )
    mask = mask.filter(ImageFilter.GaussianBlur(max(1, width // 500)))
    cutout = rgb.convert("RGBA")
    cutout.putalpha(mask)
    out_cut, out_mask = io.BytesIO(), io.BytesIO()
    # Level 1 makes them quickly; decoding costs about the same whatever the level.
    cutout.save(out_cut, "PNG", compress_level=1)
    mask.save(out_mask, "PNG")
    return out_cut.getvalue(), out_mask.getvalue()


def by_hand(cutout: bytes, mask: bytes) -> list[bytes]:
    """The two finishes as a script would write them in Pillow, each from its own decode."""
    from PIL import Image

    outputs = []
    # storefront: crop to the mask's box, fit 85% of 2000x2000, on white, JPEG 90.
    cut = Image.open(io.BytesIO(cutout)).convert("RGBA")
    matte = Image.open(io.BytesIO(mask)).convert("L")
    box = matte.point(lambda v: 255 if v > 127 else 0).getbbox() or (0, 0, *cut.size)
    piece = cut.crop(box)
    scale = min(1700 / piece.width, 1700 / piece.height)
    piece = piece.resize((round(piece.width * scale), round(piece.height * scale)), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (2000, 2000), (255, 255, 255))
    canvas.paste(piece, ((2000 - piece.width) // 2, (2000 - piece.height) // 2), piece)
    out = io.BytesIO()
    canvas.save(out, "JPEG", quality=90, optimize=True)
    outputs.append(out.getvalue())
    # thumb: the whole cut-out, at most 400 px, WebP 85.
    cut = Image.open(io.BytesIO(cutout)).convert("RGBA")
    cut.thumbnail((400, 400), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    cut.save(out, "WEBP", quality=85)
    outputs.append(out.getvalue())
    return outputs


def memory_mib() -> tuple[float, float]:
    """This process's RSS now and its peak (VmRSS, VmHWM). Unlike ``ru_maxrss``, which a child inherits
    from the parent it was forked from, the peak starts afresh with the process's own program."""
    status = dict(
        line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line
    )
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def child(variant: str, folder: str, images: int) -> dict[str, Any]:
    """One measurement in this fresh process: the pairs read from ``folder``, N images finished."""
    pairs = []
    while (Path(folder) / f"{len(pairs)}.png").exists():
        i = len(pairs)
        pairs.append(
            ((Path(folder) / f"{i}.png").read_bytes(), (Path(folder) / f"{i}_mask.png").read_bytes())
        )
    from PIL import Image  # noqa: F401  (imported before the baseline RSS, as a worker would have it)

    from airflow_provider_hitpaw._finish import apply_finish, apply_finishes, parse_finishes
    from airflow_provider_hitpaw._quality import measure_mask

    finishes = parse_finishes(FINISHES)
    rss_before, _ = memory_mib()
    written = 0
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(images):
        cutout, mask = pairs[i % len(pairs)]
        if variant == "measure_mask":
            measure_mask(mask)
            continue
        if variant == "apply_finish":
            outputs = [apply_finish(f, cutout, mask) for f in finishes]
        elif variant == "apply_finishes":
            outputs = list(apply_finishes(finishes, cutout, mask).values())
        else:
            outputs = by_hand(cutout, mask)
        written += sum(len(o) for o in outputs)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "images_per_cpu_s": images / cpu,
        "cpu_s": cpu,
        "wall_s": wall,
        "ms_per_image": 1000 * cpu / images,
        "rss_before_mib": rss_before,
        "peak_rss_mib": memory_mib()[1],
        "output_kib": written / images / 1024,
    }


def print_side_by_side(title: str, rows: dict[str, dict[str, Any]]) -> None:
    """Each figure for each variant, with its ratio to the hand-written baseline (the first row)."""
    names = list(rows)
    baseline = rows[names[0]]
    print(f"\n{title}")
    print(f"{'figure':<20}{names[0]:>14}" + "".join(f"{name:>16}{'ratio':>8}" for name in names[1:]))
    for key in KEYS:
        cells = f"{baseline[key]:>14.4g}"
        for name in names[1:]:
            value = rows[name][key]
            ratio = f"{value / baseline[key]:.2f}x" if baseline[key] else ""
            cells += f"{value:>16.4g}{ratio:>8}"
        print(f"{key:<20}{cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--smoke", action="store_true", help="3 images per size, one of each made: seconds")
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "FOLDER", "IMAGES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        variant, folder, images = args.child
        print(json.dumps(child(variant, folder, int(images))))
        return
    images = 3 if args.smoke else args.images
    made = 1 if args.smoke else min(VARIANTS, images)
    with tempfile.TemporaryDirectory(prefix="hitpaw-finishing-") as folder:
        masks: dict[str, dict[str, Any]] = {}
        for label, size in SIZES.items():
            for i in range(made):
                cutout, mask = make_pair(size, i)
                (Path(folder) / f"{i}.png").write_bytes(cutout)
                (Path(folder) / f"{i}_mask.png").write_bytes(mask)
            rows = {
                name: run_child(__file__, ["--child", name, folder, str(images)], {})
                for name in ("by hand", "apply_finish", "apply_finishes")
            }
            print_side_by_side(
                f"{label}: {images} images, storefront (white 2000x2000 JPEG 90) + thumb (WebP 400 px), "
                "one core",
                rows,
            )
            masks[label] = run_child(__file__, ["--child", "measure_mask", folder, str(images)], {})
        print(f"\nmeasure_mask, {images} masks per size, one core")
        print(f"{'size':<12}{'ms per mask':>14}{'masks per CPU s':>18}{'peak RSS MiB':>14}")
        for label, row in masks.items():
            per_second, peak = row["images_per_cpu_s"], row["peak_rss_mib"]
            print(f"{label:<12}{row['ms_per_image']:>14.1f}{per_second:>18.1f}{peak:>14.0f}")


if __name__ == "__main__":
    main()
