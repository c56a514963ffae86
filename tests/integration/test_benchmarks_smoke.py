"""Every benchmark in its smoke mode: it still runs against the package as it is, and prints its table.

Benchmarks rot when nothing runs them (the hooks moved on, and two scripts no longer started). Here each
script runs as ``python benchmarks/<script>.py --smoke``: the same code path as a measurement, at a size
that takes seconds (the ones that start real Airflow components take about a minute, most of it start-up).
Only that it exits 0 and prints its table's header is checked, never a figure: figures on a shared CI
machine mean nothing, and ``benchmarks/README.md`` keeps the measured ones.

Run by ``make bench-smoke`` (part of ``make test``), not by ``make integration``, which leaves this file out.
Every server a script starts listens on 127.0.0.1 (the emulator, Airflow's components, moto).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
#: The object-store venv (``make .venv-stores/.installed``): only it has moto and s3fs for store_reuse.py.
STORES_PYTHON = Path(os.environ.get("HITPAW_STORES_PYTHON", ROOT / ".venv-stores" / "bin" / "python"))


@dataclass(frozen=True)
class Smoke:
    #: What the script must print: its table's header (a regular expression, searched line by line).
    header: str
    #: Seconds before the script is stopped: several times what a smoke run takes on two busy cores.
    timeout: float = 150
    args: tuple[str, ...] = ()
    stores: bool = False


SMOKES: dict[str, Smoke] = {
    "poll_cost": Smoke(r"^poll_cost: 20 triggers polling .*\n^figure\s+per-trigger\s+httpx"),
    # Over https: the plain-http path is poll_cost's own.
    "trigger_scale": Smoke(
        r"^trigger_scale: .* over https\n^figure\s+shared\s+session-per-poll", args=("--tls",)
    ),
    "reaction_latency": Smoke(r"^reaction_latency: 5 jobs .*\n\s*poll interval\s+p50\s+p95\s+max"),
    "emulator_imaging": Smoke(r"^\s*side\s+median\s+max$", timeout=60),
    "faults": Smoke(r"^scenario\s+\| fault\s+\| path .*\| ok$"),
    "finishing": Smoke(r"^figure\s+by hand\s+apply_finish\s+ratio\s+apply_finishes"),
    "catalogue_nights": Smoke(r"^catalogue_nights: 5 images.*\n^figure\s+night 1\s+night 2"),
    "store_reuse": Smoke(
        r"^store_reuse: night 2 over 5 inputs.*\n^figure\s+bare listing\s+night 2", stores=True
    ),
    # Real Airflow 3 components (api-server, scheduler, dag-processor, triggerer on SQLite).
    "worker_slots": Smoke(r"^worker_slots: 2 images.*\n^figure\s+blocking\s+deferrable", timeout=300),
    "batch_vs_mapping": Smoke(
        r"^batch_vs_mapping \(sqlite\): 2 images.*\n^figure\s+mapped\s+batch", timeout=300
    ),
    "deferral_race": Smoke(r"^Airflow \S+, 2 mapped tasks.*\n^figure\s+hold default", timeout=300),
}
#: Seconds a stopped script has to stop what it started (its ``finally`` blocks stop its servers).
GRACE = 30


def test_every_benchmark_has_a_smoke_run() -> None:
    scripts = {path.stem for path in BENCHMARKS.glob("*.py") if not path.name.startswith("_")}
    assert scripts == set(SMOKES), "a benchmark without a smoke run here rots unnoticed"


def _stop(process: subprocess.Popen[str]) -> str:
    """Stop a script and what it started, by its process group: SIGINT first, so that its ``finally``
    blocks stop the servers it started in groups of their own (Airflow's components, moto), then SIGKILL."""
    for sig in (signal.SIGINT, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            output, _ = process.communicate(timeout=GRACE)
            return output
        except subprocess.TimeoutExpired:
            continue
    output, _ = process.communicate()
    return output


@pytest.mark.parametrize(
    "script",
    # pytest-timeout's limit is a backstop above this file's own (which stops the script by its group).
    [
        pytest.param(name, marks=pytest.mark.timeout(smoke.timeout + 3 * GRACE))
        for name, smoke in SMOKES.items()
    ],
)
def test_benchmark_runs_in_smoke_mode(script: str) -> None:
    smoke = SMOKES[script]
    python = sys.executable
    if smoke.stores:
        if not STORES_PYTHON.exists():
            pytest.skip(f"no object-store venv at {STORES_PYTHON} (make .venv-stores/.installed)")
        python = str(STORES_PYTHON)
    process = subprocess.Popen(
        [python, str(BENCHMARKS / f"{script}.py"), "--smoke", *smoke.args],
        cwd=ROOT,
        # The hold of a trigger's first event is off, as in every test not about it (tests/conftest.py);
        # the Airflow components the cluster benchmarks start keep Airflow's and the provider's defaults.
        env={**os.environ, "AIRFLOW__HITPAW__MIN_DEFERRED_SECONDS": "0"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=smoke.timeout)
    except subprocess.TimeoutExpired:
        output = _stop(process)
        pytest.fail(f"{script}.py --smoke ran over {smoke.timeout:g} s and was stopped:\n{output[-4000:]}")
    except BaseException:
        _stop(process)
        raise
    assert process.returncode == 0, f"{script}.py --smoke exited {process.returncode}:\n{output[-4000:]}"
    assert re.search(smoke.header, output, re.MULTILINE), f"{script}.py printed no table:\n{output[-4000:]}"
