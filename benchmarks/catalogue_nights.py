"""Two nights of a 10,000-image catalogue in one batch task, against the emulator in its own process.

Night 1 segments everything into a folder with ``overwrite="skip"``; night 2 runs the same task over the
same catalogue, where nothing changed. Each night runs in a fresh process (so its peak RSS is its own):
the batch operator submits, its trigger waits in that process's event loop (as a triggerer would run
it, with the loop's lag measured), and the resumed task keeps the results.

Goals: night 2 spends 0 coins and takes under 60 s; peak RSS under 200 MiB; event-loop lag p99 under 50 ms.

    .venv/bin/python benchmarks/catalogue_nights.py [--images 10000] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import LoopProbe, connection_env, emulator, peak_rss_mib, print_table, run_child


class _TaskInstance:
    """What the batch operator reads of its task instance, and the sizes of what it pushes."""

    def __init__(self) -> None:
        self.start_date = datetime.now(UTC)
        self.try_number, self.max_tries, self.map_index, self.task_id = 1, 1, -1, "catalogue"
        # Each night is a run of its own (the ledger and the contact sheet are filed by dag, task and run).
        self.dag_id, self.run_id = "catalogue_nights", f"scheduled__{self.start_date.isoformat()}"
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value

    def xcom_pull(self, task_ids: Any = None, key: str = "", map_indexes: Any = None) -> Any:
        return self.pushed.get(key)


def night(base_url: str, images: int, output: str, output_conn_id: str | None = None) -> dict[str, Any]:
    """One night, in this process: the figures as a dict."""
    import requests
    from airflow.providers.common.compat.sdk import TaskDeferred

    from airflow_provider_hitpaw.operators.hitpaw import SegmentImageBatchOperator

    def coins() -> int:
        state = requests.get(f"{base_url}/_emulator/state", headers=control, timeout=30).json()
        return int(state["coins"])

    control = {"X-Emulator-Token": os.environ["BENCH_CONTROL_TOKEN"]}
    before_coins = coins()
    urls = [f"{base_url}/samples/shoe.jpg?n={n}" for n in range(images)]
    operator = SegmentImageBatchOperator(
        task_id="catalogue",
        file_urls=urls,
        output_path=output,
        output_conn_id=output_conn_id,
        overwrite="skip",
        max_in_flight=16,
        poll_interval=3,
        min_deferred_seconds=0,
        timeout=3 * 3600,
    )
    ti = _TaskInstance()
    context: dict[str, Any] = {"ti": ti}
    started = time.monotonic()
    probe = LoopProbe()
    event_bytes = 0
    try:
        results = operator.execute(context)
        submitted_s = time.monotonic() - started
        waited_s = 0.0
    except TaskDeferred as deferral:
        submitted_s = time.monotonic() - started
        trigger, kwargs = deferral.trigger, deferral.kwargs or {}

        async def wait() -> dict[str, Any]:
            stop = asyncio.Event()
            probing = asyncio.ensure_future(probe.run(stop))
            try:
                async for event in trigger.run():
                    return dict(event.payload)
            finally:
                stop.set()
                await probing
            raise RuntimeError("the trigger ended without an event")

        waiting = time.monotonic()
        payload = asyncio.run(wait())
        waited_s = time.monotonic() - waiting
        event_bytes = len(json.dumps(payload))
        results = operator.execute_complete(context, payload, **kwargs)
    wall = time.monotonic() - started
    carried = ti.pushed.get("hitpaw_batch_submission")
    lag = probe.summary()
    return {
        "wall_s": wall,
        "submit_s": submitted_s,
        "wait_s": waited_s,
        "coins": before_coins - coins(),
        "submissions": sum(1 for r in results if r.get("reused") is False and r.get("job_id")),
        "reused": sum(1 for r in results if r.get("reused")),
        "completed": sum(1 for r in results if r["status"] == "COMPLETED"),
        "peak_rss_mib": peak_rss_mib(),
        "largest_event_bytes": event_bytes,
        "result_xcom_bytes": len(json.dumps(results)),
        "carried_xcom_bytes": len(json.dumps(carried)) if carried is not None else 0,
        "lag_p99_ms": lag["lag_p99_ms"] if probe.lags else 0.0,
        "lag_max_ms": lag["lag_max_ms"] if probe.lags else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--job-seconds", type=float, default=5.0)
    parser.add_argument("--smoke", action="store_true", help="5 images, jobs of 1 s: proves the script runs")
    parser.add_argument("--child", nargs=3, metavar=("BASE_URL", "IMAGES", "OUTPUT"), help=argparse.SUPPRESS)
    # The output's Airflow connection (an object store's; store_reuse.py), as output_conn_id gives it.
    parser.add_argument("--output-conn-id", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        base_url, images, output = args.child
        print(json.dumps(night(base_url, int(images), output, args.output_conn_id)))
        return
    if args.smoke:
        args.images, args.job_seconds = 5, 1.0
    with emulator(job_seconds=args.job_seconds) as server, tempfile.TemporaryDirectory() as folder:
        env = {
            **connection_env(server.base_url),
            "BENCH_CONTROL_TOKEN": server.control_token,
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        }
        output = f"file://{folder}/cutouts"
        rows = {}
        for name in ("night 1", "night 2"):
            rows[name] = run_child(__file__, ["--child", server.base_url, str(args.images), output], env)
            print(f"{name}: {json.dumps(rows[name])}", flush=True)
    keys = [
        "coins",
        "submissions",
        "reused",
        "completed",
        "wall_s",
        "submit_s",
        "wait_s",
        "peak_rss_mib",
        "largest_event_bytes",
        "result_xcom_bytes",
        "carried_xcom_bytes",
        "lag_p99_ms",
        "lag_max_ms",
    ]
    print_table(
        f"catalogue_nights: {args.images:,} images, jobs of {args.job_seconds:g} s", rows, keys, "night 1"
    )
    second = rows["night 2"]
    worst_rss = max(row["peak_rss_mib"] for row in rows.values())
    worst_lag = max(row["lag_p99_ms"] for row in rows.values())
    print(
        f"\ngoals: night 2 coins 0 ({second['coins']}), night 2 under 60 s ({second['wall_s']:.1f} s), "
        f"peak RSS under 200 MiB ({worst_rss:.0f}), lag p99 under 50 ms ({worst_lag:.1f})"
    )


if __name__ == "__main__":
    main()
