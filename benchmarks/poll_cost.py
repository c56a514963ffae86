"""What 1,000 waiting SegmentationTriggers cost in one event loop, by async HTTP client.

Runs the shipped trigger (one client per trigger, as in the core provider) against the local emulator,
once on aiohttp (the client the provider uses) and once on httpx (the alternative, already installed with
Airflow), each in a fresh process, and prints CPU seconds per poll, peak memory, open sockets and
event-loop lag side by side, with the ratio httpx / aiohttp.

    .venv/bin/python benchmarks/poll_cost.py --triggers 1000 --interval 3 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import LoopProbe, connection_env, emulator, peak_rss_mib, print_table, run_child


def make_httpx_hook_class() -> type:
    """The rejected alternative: the same hook, speaking through ``httpx.AsyncClient``."""
    import httpx

    from airflow_provider_hitpaw import _api
    from airflow_provider_hitpaw.exceptions import HitPawConnectionError, HitPawError
    from airflow_provider_hitpaw.hooks.hitpaw import HitPawAsyncHook

    class HttpxAsyncHook(HitPawAsyncHook):
        async def _get_client(self) -> Any:
            if self._client is None:
                settings = await self.get_settings()
                self._client = httpx.AsyncClient(  # type: ignore[assignment]
                    headers=_api.request_headers(settings.api_key),
                    timeout=httpx.Timeout(self.read_timeout, connect=self.connect_timeout),
                    limits=httpx.Limits(max_connections=32),
                )
            return self._client

        async def close(self) -> None:
            if self._client is not None:
                await self._client.aclose()  # type: ignore[attr-defined]
                self._client = None

        async def _call(self, request: Any, parse: Any) -> Any:
            client = await self._get_client()
            url = request.url((await self.get_settings()).base_url)
            attempt = 0
            while True:
                attempt += 1
                try:
                    response = await client.post(url, json=request.body)
                    return parse(response.status_code, response.content, response.headers.get("Retry-After"))
                except httpx.HTTPError as err:
                    error: HitPawError = HitPawConnectionError(str(err))
                except HitPawError as err:
                    error = err
                if not self.retry_policy.should_retry(error, attempt):
                    raise error
                await asyncio.sleep(self.retry_policy.delay(error, attempt))

    return HttpxAsyncHook


async def run_triggers(client: str, job_ids: list[str], interval: float, duration: float) -> dict[str, Any]:
    from airflow_provider_hitpaw.hooks.hitpaw import HitPawAsyncHook
    from airflow_provider_hitpaw.triggers.hitpaw import SegmentationTrigger

    hook_class = make_httpx_hook_class() if client == "httpx" else HitPawAsyncHook
    polls = 0
    original_get_task_status = HitPawAsyncHook.get_task_status

    async def counted(self: Any, job_id: str) -> Any:
        nonlocal polls
        polls += 1
        return await original_get_task_status(self, job_id)

    hook_class.get_task_status = counted  # type: ignore[attr-defined]

    class Trigger(SegmentationTrigger):
        def _make_hook(self) -> Any:
            return hook_class(self.hitpaw_conn_id)

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
        "client": client,
        "triggers": len(job_ids),
        "polls": polls,
        "timeouts": outcomes.count("timeout"),
        "cpu_s": cpu,
        "cpu_ms_per_poll": 1000 * cpu / max(polls, 1),
        "wall_s": wall,
        "peak_rss_mib": peak_rss_mib(),
        **probe.summary(),
    }


def child(args: argparse.Namespace) -> None:
    job_ids = json.loads(Path(args.jobs_file).read_text())
    figures = asyncio.run(run_triggers(args.child, job_ids, args.interval, args.duration))
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--triggers", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--child", choices=["aiohttp", "httpx"], help=argparse.SUPPRESS)
    parser.add_argument("--jobs-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    import tempfile

    with emulator() as emu, tempfile.TemporaryDirectory() as tmp:
        jobs_file = Path(tmp) / "jobs.json"
        jobs_file.write_text(json.dumps(emu.submit_jobs(args.triggers)))
        rows = {}
        for client in ("aiohttp", "httpx"):
            common = ["--interval", str(args.interval), "--duration", str(args.duration)]
            rows[client] = run_child(
                __file__,
                ["--child", client, "--jobs-file", str(jobs_file), *common],
                connection_env(emu.base_url),
            )
    print_table(
        f"poll_cost: {args.triggers} triggers, one client each, "
        f"every {args.interval:g} s for {args.duration:g} s",
        rows,
        [
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
        ],
        baseline="aiohttp",
    )
    print("\nratio = httpx / aiohttp (above 1: httpx costs more)")


if __name__ == "__main__":
    main()
