"""What the benchmarks share: a local emulator in its own process, and measurements of an event loop.

The emulator runs in a separate process so that the figures of the client under test hold only the
client's own work.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import requests

from airflow_provider_hitpaw.emulator.startup import parse_startup_line

if TYPE_CHECKING:
    from collections.abc import Iterator

BENCH_KEY = "bench-key-0123456789"


@dataclass
class EmulatorProcess:
    base_url: str
    process: subprocess.Popen[str]
    #: What /_emulator/* requests must send in X-Emulator-Token (from the start-up line).
    control_token: str

    def state(self, verify: bool | str = True) -> dict[str, Any]:
        answer = requests.get(
            f"{self.base_url}/_emulator/state",
            headers={"X-Emulator-Token": self.control_token},
            timeout=10,
            verify=verify,
        )
        answer.raise_for_status()
        return answer.json()  # type: ignore[no-any-return]

    def submit_jobs(self, count: int, verify: bool | str = True) -> list[str]:
        """Jobs that stay CONVERTING for the whole run (the emulator is started with long jobs)."""
        url = f"{self.base_url}/samples/shoe.jpg"
        with requests.Session() as session:
            session.headers["Apikey"] = BENCH_KEY
            return [
                session.post(
                    f"{self.base_url}/api/image-segmentation",
                    json={"file_url": url},
                    timeout=30,
                    verify=verify,
                ).json()["data"]["job_id"]
                for _ in range(count)
            ]


@contextmanager
def emulator(*extra_args: str, job_seconds: float = 100_000, tls: Any = None) -> Iterator[EmulatorProcess]:
    """The emulator in its own process; over https when ``tls`` (a ``TLSFiles``) is given."""
    if tls is not None:
        extra_args = (*extra_args, "--tls-cert", tls.server_cert, "--tls-key", tls.server_key)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_hitpaw.emulator",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--api-key",
            BENCH_KEY,
            "--job-seconds",
            str(job_seconds),
            "--coins",
            "100000000",
            "--log-level",
            "WARNING",
            *extra_args,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        try:
            base_url, control_token = parse_startup_line(line)
        except ValueError:
            raise RuntimeError(f"the emulator did not start: {line!r}") from None
        yield EmulatorProcess(base_url=base_url, process=process, control_token=control_token)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def connection_env(base_url: str, ca_bundle: str | None = None) -> dict[str, str]:
    extra = {"ca_bundle": ca_bundle} if ca_bundle else {}
    return {
        "AIRFLOW_CONN_HITPAW_DEFAULT": json.dumps(
            {"conn_type": "hitpaw", "host": base_url, "password": BENCH_KEY, "extra": extra}
        ),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }


def open_sockets() -> int:
    """How many sockets this process holds open now (Linux)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            continue
    return count


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class LoopProbe:
    """Measures event-loop lag (how late a 20 ms sleep wakes up) and the peak of open sockets."""

    interval: float = 0.02
    lags: list[float] = field(default_factory=list)
    max_sockets: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        ticks = 0
        while not stop.is_set():
            before = loop.time()
            await asyncio.sleep(self.interval)
            self.lags.append(max(0.0, loop.time() - before - self.interval))
            ticks += 1
            if ticks % 25 == 0:
                self.max_sockets = max(self.max_sockets, open_sockets())

    def summary(self) -> dict[str, float]:
        lags = sorted(self.lags) or [0.0]
        return {
            "lag_p50_ms": 1000 * statistics.median(lags),
            "lag_p99_ms": 1000 * lags[min(len(lags) - 1, int(len(lags) * 0.99))],
            "lag_max_ms": 1000 * lags[-1],
            "max_open_sockets": self.max_sockets,
        }


def run_child(script: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run one measured client in a fresh process, so peak memory is its own; it prints one JSON line."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, script, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{script} {args} failed:\n{result.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    figures["process_wall_s"] = time.monotonic() - started
    return figures


def print_table(title: str, rows: dict[str, dict[str, Any]], keys: list[str], baseline: str) -> None:
    names = list(rows)
    print(f"\n{title}")
    print(f"{'figure':<24}" + "".join(f"{name:>18}" for name in names) + f"{'ratio':>12}")
    for key in keys:
        values = [rows[name].get(key) for name in names]
        cells = "".join(f"{v:>18.4g}" if isinstance(v, int | float) else f"{v!s:>18}" for v in values)
        other = [n for n in names if n != baseline]
        ratio = ""
        base = rows[baseline].get(key)
        if other and isinstance(base, int | float) and base:
            mine = rows[other[0]].get(key)
            if isinstance(mine, int | float):
                ratio = f"{mine / base:.2f}x"
        print(f"{key:<24}{cells}{ratio:>12}")
