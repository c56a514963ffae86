"""The fault matrix as a table: every scenario of ``tests/integration/fault_scenarios.py`` against a local
emulator, through the provider's real operator, hooks and trigger.

For each scenario and path (``operator``: waits in process; ``deferred``: TaskDeferred, the trigger run to
its end, then ``execute_complete``) it prints the fault, the expected and the observed outcome, the API
requests the emulator received (connections refused during the outage never arrive: they show as
retries), the jobs it created, the events the trigger yielded, the retries the
hooks made and the wall time. Back-off pauses are shortened (their full length is recorded), the outage
is sat through in real time (20 s, once, by both paths together: "(both)"; their figures are shared).

    .venv/bin/python benchmarks/faults.py [--only NAME-SUBSTRING] [--smoke]

``--smoke`` runs the first scenario (a transient fault, both paths) and those that fail at the submission
(no wait): about 15 s instead of about 3 minutes. A row not as expected still makes the exit status 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TextIO

# The scenarios live with the tests: put the repository root on the path to import them.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.fault_scenarios import SCENARIOS, Observation, run_scenario

COLUMNS = (
    ("scenario", 25),
    ("fault", 44),
    ("path", 17),
    ("expected", 40),
    ("observed", 40),
    ("requests", 8),
    ("jobs", 4),
    ("events", 6),
    ("retries", 7),
    ("time s", 6),
    ("ok", 3),
)


def rows_of(observation: Observation) -> list[tuple[str, ...]]:
    """One row per path; the emulator's figures (requests, jobs) are those of the whole run."""
    scenario = observation.scenario
    rows: list[tuple[str, ...]] = []
    for path, result in observation.paths.items():
        events = "-" if result.events is None else str(len(result.events))
        jobs = observation.jobs_per_image
        ok = (
            result.outcome == scenario.expected
            and all(n == 1 for n in jobs.values())
            and (result.events is None or len(result.events) == 1)
        )
        rows.append(
            (
                scenario.name,
                scenario.fault_text or "-",
                f"{path} (both)" if len(observation.paths) > 1 else path,
                scenario.expected,
                result.outcome,
                str(observation.requests),
                str(sum(jobs.values())),
                events,
                str(len(observation.retries)),
                f"{result.seconds:.2f}",
                "yes" if ok else "NO",
            )
        )
    return rows


def print_row(cells: tuple[str, ...], out: TextIO) -> None:
    line = " | ".join(cell[:width].ljust(width) for cell, (_, width) in zip(cells, COLUMNS, strict=True))
    print(line.rstrip(), file=out, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="", help="run the scenarios whose name contains this")
    parser.add_argument("--verbose", action="store_true", help="keep the provider's logs (on stdout)")
    parser.add_argument("--smoke", action="store_true", help="a few quick scenarios: proves the script runs")
    args = parser.parse_args()
    out: TextIO = sys.stdout
    if not args.verbose:
        # The hooks' retry warnings would drown the table: Airflow 3 logs through structlog to the
        # process's stdout, so the table goes to a copy of it and the original is pointed at /dev/null.
        logging.disable(logging.CRITICAL)
        sys.stdout.flush()
        out = os.fdopen(os.dup(1), "w", buffering=1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)

    from airflow_provider_hitpaw.emulator.server import EmulatorServer

    failures = 0
    with EmulatorServer(job_seconds=0.2) as server:
        os.environ["AIRFLOW_CONN_HITPAW_DEFAULT"] = json.dumps(
            {"conn_type": "hitpaw", "host": server.base_url, "password": server.api_key}
        )
        print_row(tuple(name for name, _ in COLUMNS), out)
        print("-+-".join("-" * width for _, width in COLUMNS), file=out)
        for scenario in SCENARIOS:
            if args.only not in scenario.name:
                continue
            if args.smoke and scenario is not SCENARIOS[0] and not scenario.fails_at_submission:
                continue
            for paths in scenario.path_groups():
                observation = run_scenario(server, scenario, paths)
                for row in rows_of(observation):
                    print_row(row, out)
                    failures += row[-1] != "yes"
    print(f"\n{failures} row(s) not as expected", file=out, flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
