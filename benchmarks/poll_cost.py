"""What 1,000 waiting SegmentationTriggers cost in one event loop, by async HTTP client.

Runs the shipped trigger against the local emulator (in its own process), once per client pattern, each
in a fresh process, and prints CPU seconds per poll, peak memory, open sockets and event-loop lag side by
side, with the ratio to the first pattern. The patterns are described in ``_clients.py``.

    .venv/bin/python benchmarks/poll_cost.py                              # aiohttp against httpx
    .venv/bin/python benchmarks/poll_cost.py --variants shared session-per-poll
    .venv/bin/python benchmarks/poll_cost.py --smoke                      # seconds: proves it runs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import LoopProbe, connection_env, emulator, peak_rss_mib, print_table, run_child

FIGURES = [
    "polls",
    "timeouts",
    "cpu_s",
    "cpu_ms_per_poll",
    "peak_rss_mib",
    "max_open_sockets",
    "lag_p50_ms",
    "lag_p99_ms",
    "lag_max_ms",
    "wall_s",
]


async def run_triggers(variant: str, job_ids: list[str], interval: float, duration: float) -> dict[str, Any]:
    from _clients import make_hook

    from airflow_provider_hitpaw.hooks.hitpaw import HitPawAsyncHook
    from airflow_provider_hitpaw.triggers.hitpaw import SegmentationTrigger

    polls = 0
    original = HitPawAsyncHook.get_task_status

    async def counted(self: Any, job_id: str, **kwargs: Any) -> Any:
        nonlocal polls
        polls += 1
        return await original(self, job_id, **kwargs)

    HitPawAsyncHook.get_task_status = counted  # type: ignore[method-assign]

    class Trigger(SegmentationTrigger):
        def _make_hook(self) -> HitPawAsyncHook:
            return make_hook(variant, self.hitpaw_conn_id)

    async def one(job_id: str, delay: float) -> str:
        # Triggers start at different moments in real life; spread them over one interval.
        await asyncio.sleep(delay)
        trigger = Trigger(job_id, "hitpaw_default", interval, time.time() + duration)
        async for event in trigger.run():
            return str(event.payload["status"])
        return "none"

    rng = random.Random(7)
    probe = LoopProbe()
    stop = asyncio.Event()
    probe_task = asyncio.create_task(probe.run(stop))
    cpu_before, wall_before = time.process_time(), time.monotonic()
    outcomes = await asyncio.gather(*(one(job, rng.uniform(0, interval)) for job in job_ids))
    cpu, wall = time.process_time() - cpu_before, time.monotonic() - wall_before
    stop.set()
    await probe_task
    return {
        "client": variant,
        "triggers": len(job_ids),
        "polls": polls,
        "timeouts": outcomes.count("timeout"),
        "cpu_s": cpu,
        "cpu_ms_per_poll": 1000 * cpu / max(polls, 1),
        "wall_s": wall,
        "peak_rss_mib": peak_rss_mib(),
        **probe.summary(),
    }


def compare(
    script: str, title: str, variants: list[str], triggers: int, interval: float, duration: float, tls: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tls_files = None
        if tls:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
            from tests.conftest import make_tls_files

            tls_files = make_tls_files(tmp)
        ca = tls_files.ca_cert if tls_files else None
        with emulator(tls=tls_files) as emu:
            jobs_file = Path(tmp) / "jobs.json"
            jobs_file.write_text(json.dumps(emu.submit_jobs(triggers, verify=ca or True)))
            rows = {}
            for variant in variants:
                args = ["--child", variant, "--jobs-file", str(jobs_file)]
                args += ["--interval", str(interval), "--duration", str(duration)]
                rows[variant] = run_child(script, args, connection_env(emu.base_url, ca))
    scheme = "https" if tls else "http"
    print_table(
        f"{title}: {triggers} triggers polling every {interval:g} s for {duration:g} s, over {scheme}",
        rows,
        FIGURES,
        variants[0],
    )
    print(f"\nratio = {variants[1]} / {variants[0]} (above 1: {variants[1]} costs more)")


def main(default_variants: tuple[str, ...] = ("per-trigger", "httpx"), title: str = "poll_cost") -> None:
    from _clients import VARIANTS

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--triggers", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(default_variants))
    parser.add_argument("--tls", action="store_true", help="serve the emulator over https, as HitPaw is")
    parser.add_argument(
        "--smoke", action="store_true", help="20 triggers, every 0.5 s for 2 s: proves the script runs"
    )
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--jobs-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke and not args.child:
        args.triggers, args.interval, args.duration = 20, 0.5, 2.0
    if args.child:
        job_ids = json.loads(Path(args.jobs_file).read_text())
        print(json.dumps(asyncio.run(run_triggers(args.child, job_ids, args.interval, args.duration))))
        return
    compare(sys.argv[0], title, args.variants, args.triggers, args.interval, args.duration, args.tls)


if __name__ == "__main__":
    main()
