"""Worker slots held while HitPaw works: deferrable against blocking waits, on real Airflow components.

N images, jobs of T seconds on the local emulator, P < N worker slots (``parallelism``). The same DAG runs
once with deferrable waits and once with blocking ones, on one set of Airflow 3 components. Printed: wall
time of each run, and worker-slot seconds (the number of task instances in state ``running``, sampled every
0.25 s and summed over time), with their ratios.

    .venv/bin/python benchmarks/worker_slots.py --images 8 --job-seconds 10
    .venv/bin/python benchmarks/worker_slots.py --smoke   # 2 images, jobs of 1 s: about a minute
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

from airflow_provider_hitpaw.emulator.server import EmulatorServer  # noqa: E402
from tests.integration.airflow_cluster import AirflowCluster, running_cluster  # noqa: E402

SAMPLE_NAMES = ["shoe.jpg", "portrait.png", "product.webp", "mug.jpg"]
SAMPLE_INTERVAL = 0.25


def measure(
    cluster: AirflowCluster, emulator: EmulatorServer, dag_id: str, urls: list[str]
) -> dict[str, Any]:
    emulator_jobs_before = len(emulator.state()["jobs"])
    cluster.wait_for_dag(dag_id)
    started = time.monotonic()
    run_id = cluster.trigger(dag_id, {"operator_urls": urls, "sensor_urls": []})
    slot_seconds = 0.0
    most_running = 0
    most_deferred = 0
    state = "queued"
    while state not in ("success", "failed"):
        tick = time.monotonic()
        states = [s for task, _, s in cluster.task_states(dag_id, run_id) if task == "segment"]
        running = states.count("running")
        most_running = max(most_running, running)
        most_deferred = max(most_deferred, states.count("deferred"))
        state = cluster.run_state(dag_id, run_id)
        time.sleep(max(0.0, SAMPLE_INTERVAL - (time.monotonic() - tick)))
        slot_seconds += running * (time.monotonic() - tick)
    return {
        "state": state,
        "wall_s": time.monotonic() - started,
        "worker_slot_s": slot_seconds,
        "most_running": most_running,
        "most_deferred": most_deferred,
        "jobs_submitted": len(emulator.state()["jobs"]) - emulator_jobs_before,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--job-seconds", type=float, default=10.0)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="2 images, jobs of 1 s: proves the script runs")
    args = parser.parse_args()
    if args.smoke:
        args.images, args.job_seconds, args.slots = 2, 1.0, 2

    dag_file = ROOT / "tests" / "integration" / "dags" / "hitpaw_integration.py"
    slots = {"AIRFLOW__CORE__PARALLELISM": str(args.slots)}
    with (
        EmulatorServer(job_seconds=args.job_seconds) as emulator,
        tempfile.TemporaryDirectory() as tmp,
        running_cluster(emulator, Path(tmp), [dag_file], extra_env=slots) as cluster,
    ):
        urls = [emulator.sample_url(SAMPLE_NAMES[i % len(SAMPLE_NAMES)]) for i in range(args.images)]
        rows = {
            "blocking": measure(cluster, emulator, "hitpaw_it_blocking", urls),
            "deferrable": measure(cluster, emulator, "hitpaw_it_deferrable", urls),
        }
    print_table(
        f"worker_slots: {args.images} images, jobs of {args.job_seconds:g} s, {args.slots} worker slots",
        rows,
        ["state", "wall_s", "worker_slot_s", "most_running", "most_deferred", "jobs_submitted"],
        baseline="blocking",
    )
    print("\nratio = deferrable / blocking")


if __name__ == "__main__":
    main()
