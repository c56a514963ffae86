"""1,000 concurrent waits in one event loop, 3 s cadence: the shipped shared client against a
session-per-poll client (the pattern of Airflow's dbt Cloud and HTTP triggers).

Goals: CPU per poll at most half the baseline's, event-loop lag p99 under 50 ms, at most 32 open
connections. Same measurement as poll_cost.py, other patterns.

    .venv/bin/python benchmarks/trigger_scale.py [--tls] [--smoke]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from poll_cost import main

if __name__ == "__main__":
    main(default_variants=("shared", "session-per-poll"), title="trigger_scale")
