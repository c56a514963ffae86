"""How often Airflow's own race fails tasks whose trigger fires soon after the deferral, by event hold.

Airflow 3 can fail a resumed try when the trigger's event arrives within seconds of the deferral: the
executor's "success" of the try that deferred is processed after the event, and the resumed try is failed
(apache/airflow#66374, #71580, #72716; the scheduler logs "finished with state success, but the task
instance's state attribute is queued"). The provider holds each trigger's first event
``min_deferred_seconds`` past the deferral; this measures the failures for several holds, each on fresh
real components (api-server, scheduler, dag-processor, triggerer; SQLite, LocalExecutor) with Airflow's
defaults: 60 mapped tasks, each with a job that ends about a second after its submission, no retries.

    .venv/bin/python benchmarks/deferral_race.py --holds 0 3 10 --tasks 60
    .venv/bin/python benchmarks/deferral_race.py --smoke   # the default hold, 2 tasks: about a minute
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import print_table  # noqa: E402

from airflow_provider_hitpaw.emulator.runner import EmulatorServer  # noqa: E402
from tests.integration.airflow_cluster import AIRFLOW_DEFAULT_HEARTBEATS, running_cluster  # noqa: E402

DAG_FILE = ROOT / "tests" / "integration" / "dags" / "hitpaw_race.py"
RACE_LINE = "but the task instance's state attribute is"


def run_once(hold: float | None, tasks: int, job_seconds: float) -> dict[str, Any]:
    with EmulatorServer(job_seconds=job_seconds) as emulator, tempfile.TemporaryDirectory() as home:
        env = {**AIRFLOW_DEFAULT_HEARTBEATS, **({} if hold is None else {"HITPAW_RACE_HOLD": str(hold)})}
        with running_cluster(emulator, Path(home), [DAG_FILE], extra_env=env) as cluster:
            cluster.wait_for_dag("hitpaw_race")
            urls = [f"{emulator.sample_url('shoe.jpg')}?n={i}" for i in range(tasks)]
            started = time.monotonic()
            run_id = cluster.trigger("hitpaw_race", {"urls": urls})
            state = "queued"
            while state not in ("success", "failed"):
                time.sleep(2)
                state = cluster.run_state("hitpaw_race", run_id)
            wall = time.monotonic() - started
            states = [s for task, _, s in cluster.task_states("hitpaw_race", run_id) if task == "segment"]
            scheduler_log = (Path(home) / "component-logs" / "scheduler.log").read_text(errors="replace")
            jobs = emulator.state()["jobs"]
        return {
            "hold_s": "default" if hold is None else hold,
            "tasks": len(states),
            "failed": sum(s != "success" for s in states),
            "race_lines": scheduler_log.count(RACE_LINE),
            "jobs_paid": len(jobs),
            "wall_s": round(wall, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--holds", nargs="+", default=["0", "10"], help="holds in seconds; 'default' too")
    parser.add_argument("--tasks", type=int, default=60)
    parser.add_argument("--job-seconds", type=float, default=1.0)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="one set of components (the default hold), 2 tasks: proves the script runs",
    )
    args = parser.parse_args()
    if args.smoke:
        args.holds, args.tasks, args.job_seconds = ["default"], 2, 1.0
    rows = []
    for hold in args.holds:
        value = None if hold == "default" else float(hold)
        rows.append(run_once(value, args.tasks, args.job_seconds))
        print(rows[-1], flush=True)
    import airflow

    title = f"Airflow {airflow.__version__}, {args.tasks} mapped tasks, jobs of {args.job_seconds:g} s"
    table = {f"hold {row['hold_s']}": row for row in rows}
    print_table(
        title, table, ["tasks", "failed", "race_lines", "jobs_paid", "wall_s"], baseline=next(iter(table))
    )


if __name__ == "__main__":
    main()
