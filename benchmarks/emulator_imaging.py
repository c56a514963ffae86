"""How long the emulator takes to segment and render one image, by size (no server, this process).

The emulator answers a submission only once its image is processed: this is the floor of a job's length
in tests. Printed per side length: the median and the worst of ``--repeat`` runs, after a warm-up.

    .venv/bin/python benchmarks/emulator_imaging.py --sizes 256 1024 2048 --repeat 5
    .venv/bin/python benchmarks/emulator_imaging.py --smoke   # two small sizes, twice: proves it runs
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from airflow_provider_hitpaw.emulator import imaging

BACKGROUND = (235, 237, 240)


def picture(side: int) -> np.ndarray:
    """A disc on a light background, with a background-coloured hole inside it (as the unit tests draw)."""
    img = np.empty((side, side, 3), dtype=np.uint8)
    img[:] = BACKGROUND
    yy, xx = np.mgrid[0:side, 0:side]
    img[(yy - side // 2) ** 2 + (xx - side * 15 // 32) ** 2 < (side * 300 // 1024) ** 2] = (180, 40, 60)
    img[side * 15 // 32 : side * 135 // 256, side * 25 // 64 : side * 35 // 64] = BACKGROUND
    return img


def measure(side: int, repeat: int) -> dict[str, float]:
    img = picture(side)
    imaging.segment(img)  # warm-up (numpy first-call overheads)
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        imaging.render_results(imaging.DecodedImage("png", img, None), imaging.segment(img))
        seconds.append(time.perf_counter() - started)
    return {"side": side, "median_s": statistics.median(seconds), "max_s": max(seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 2048])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="sides 64 and 256, twice each: under a second")
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.repeat = [64, 256], 2
    print(f"{'side':>6} {'median':>9} {'max':>9}")
    for side in args.sizes:
        row = measure(side, args.repeat)
        print(f"{row['side']:>6} {row['median_s']:>8.3f}s {row['max_s']:>8.3f}s")


if __name__ == "__main__":
    main()
