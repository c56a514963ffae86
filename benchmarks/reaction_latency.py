"""How soon after HitPaw finishes a job does the waiting task hear of it?

Jobs are submitted at random moments to the emulator (its own process); a SegmentationTrigger waits for
each. The reaction latency is the time from the emulator marking the job COMPLETED (its ``finished_at``)
to the trigger's event. Printed per poll interval: p50, p95 and max, beside the interval itself (polling
can do no better than about half an interval on average).

    .venv/bin/python benchmarks/reaction_latency.py --jobs 200 --intervals 1 3
    .venv/bin/python benchmarks/reaction_latency.py --smoke   # 5 jobs of 1 s: proves the script runs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import BENCH_KEY, EmulatorProcess, connection_env, emulator


async def measure(emu: EmulatorProcess, jobs: int, interval: float, job_seconds: float) -> dict[str, float]:
    from airflow_provider_hitpaw.triggers.hitpaw import SegmentationTrigger

    base_url = emu.base_url
    rng = random.Random(11)
    sample = f"{base_url}/samples/shoe.jpg"
    session = requests.Session()
    session.headers["Apikey"] = BENCH_KEY
    events: dict[str, float] = {}

    async def one(delay: float) -> None:
        await asyncio.sleep(delay)
        answer = await asyncio.to_thread(
            session.post, f"{base_url}/api/image-segmentation", json={"file_url": sample}, timeout=30
        )
        job_id = answer.json()["data"]["job_id"]
        # A real wait starts at no particular moment of the job's life: otherwise, with a job length that
        # is a multiple of the interval, every poll would land just as the job completes.
        await asyncio.sleep(rng.uniform(0, interval))
        trigger = SegmentationTrigger(job_id, "hitpaw_default", interval, time.time() + job_seconds + 60)
        async for event in trigger.run():
            assert event.payload["status"] == "success", event.payload
            events[job_id] = time.time()

    await asyncio.gather(*(one(rng.uniform(0, 2 * interval)) for _ in range(jobs)))
    finished = {job["job_id"]: job["finished_at"] for job in emu.state()["jobs"]}
    latencies = sorted(events[job] - finished[job] for job in events)
    return {
        "interval_s": interval,
        "p50_s": statistics.median(latencies),
        "p95_s": latencies[int(0.95 * (len(latencies) - 1))],
        "max_s": latencies[-1],
        "p50_over_interval": statistics.median(latencies) / interval,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--intervals", type=float, nargs="+", default=[1.0, 3.0])
    parser.add_argument("--job-seconds", type=float, default=4.0)
    parser.add_argument("--smoke", action="store_true", help="5 jobs of 1 s, intervals 0.5 and 1 s: seconds")
    args = parser.parse_args()
    if args.smoke:
        args.jobs, args.intervals, args.job_seconds = 5, [0.5, 1.0], 1.0
    rows: list[dict[str, Any]] = []
    with emulator(job_seconds=args.job_seconds) as emu:
        os.environ.update(connection_env(emu.base_url))
        for interval in args.intervals:
            rows.append(asyncio.run(measure(emu, args.jobs, interval, args.job_seconds)))
    print(f"\nreaction_latency: {args.jobs} jobs of {args.job_seconds:g} s, COMPLETED -> trigger event")
    print(f"{'poll interval':>14}{'p50':>10}{'p95':>10}{'max':>10}{'p50/interval':>14}")
    for row in rows:
        print(
            f"{row['interval_s']:>13g}s{row['p50_s']:>9.2f}s{row['p95_s']:>9.2f}s{row['max_s']:>9.2f}s"
            f"{row['p50_over_interval']:>14.2f}"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
