"""``make demo``: the repository's way to run ``hitpaw-demo`` (the command the wheel installs), writing the
PNGs to ``./demo-output/``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from airflow_provider_hitpaw.demo import main

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    output = os.environ.get("HITPAW_DEMO_OUTPUT", str(ROOT / "demo-output"))
    sys.exit(main(["--output", output, *sys.argv[1:]]))
