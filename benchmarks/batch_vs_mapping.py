"""Many images on real Airflow 3 components: one SegmentImageBatchOperator against a mapped
SegmentImageOperator (one task instance and one trigger per image).

Printed for each, from one run on one set of components: wall time (trigger to end of the DAG run), task
instances, trigger rows created, and the CPU seconds the scheduler and the triggerer spent meanwhile,
with ratios batch / mapped.

    .venv/bin/python benchmarks/batch_vs_mapping.py --images 500
"""

from __future__ import annotations

import argparse
import sqlite3
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

SAMPLES = ["shoe.jpg", "portrait.png", "product.webp", "mug.jpg"]


def cpu_seconds(cluster: AirflowCluster, component: str) -> float:
    """CPU seconds of every live process whose command line runs this Airflow component."""
    total = 0.0
    ticks = 100.0
    for pid in cluster.descendants():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if f"airflow {component}" in cmdline:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def trigger_ids(cluster: AirflowCluster) -> set[tuple[int, str]]:
    """The triggers that exist now; sampled through a run, they count the trigger rows it created.

    Keyed by id and creation time: SQLite hands a deleted row's id to the next row.
    """
    with sqlite3.connect(cluster.home / "airflow.db", timeout=30) as db:
        return {(int(row[0]), str(row[1])) for row in db.execute("select id, created_date from trigger")}


def measure(cluster: AirflowCluster, dag_id: str, urls: list[str]) -> dict[str, Any]:
    cluster.wait_for_dag(dag_id)
    seen_triggers: set[tuple[int, str]] = set()
    scheduler_before = cpu_seconds(cluster, "scheduler")
    triggerer_before = cpu_seconds(cluster, "triggerer")
    started = time.monotonic()
    run_id = cluster.trigger(dag_id, {"operator_urls": urls, "sensor_urls": []})
    state = "queued"
    while state not in ("success", "failed"):
        time.sleep(1)
        seen_triggers |= trigger_ids(cluster)
        state = cluster.run_state(dag_id, run_id)
    wall = time.monotonic() - started
    tasks = cluster.task_states(dag_id, run_id)
    not_ok = sorted({(task, state) for task, _, state in tasks if state not in ("success", "skipped")})
    if not_ok:
        print(f"{dag_id}: tasks not successful: {not_ok}", file=sys.stderr)
    return {
        "state": state,
        "wall_s": wall,
        "task_instances": len(tasks),
        "trigger_rows": len(seen_triggers),
        "scheduler_cpu_s": cpu_seconds(cluster, "scheduler") - scheduler_before,
        "triggerer_cpu_s": cpu_seconds(cluster, "triggerer") - triggerer_before,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--job-seconds", type=float, default=5.0)
    parser.add_argument("--slots", type=int, default=4)
    args = parser.parse_args()
    dag_file = ROOT / "tests" / "integration" / "dags" / "hitpaw_integration.py"
    extra = {
        "AIRFLOW__CORE__PARALLELISM": str(args.slots),
        # The mapped run has as many task instances as images; let them all be scheduled.
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(max(16, args.images)),
        "AIRFLOW__CORE__MAX_MAP_LENGTH": str(max(1024, args.images)),
    }
    with (
        EmulatorServer(job_seconds=args.job_seconds) as emulator,
        tempfile.TemporaryDirectory() as tmp,
        running_cluster(emulator, Path(tmp), [dag_file], extra_env=extra) as cluster,
    ):
        urls = [f"{emulator.sample_url(SAMPLES[i % len(SAMPLES)])}?n={i}" for i in range(args.images)]
        rows = {
            "mapped": measure(cluster, "hitpaw_it_deferrable", urls),
            "batch": measure(cluster, "hitpaw_it_batch", [f"{url}&b=1" for url in urls]),
        }
    print_table(
        f"batch_vs_mapping: {args.images} images, jobs of {args.job_seconds:g} s, {args.slots} worker slots",
        rows,
        ["state", "wall_s", "task_instances", "trigger_rows", "scheduler_cpu_s", "triggerer_cpu_s"],
        baseline="mapped",
    )
    print("\nratio = batch / mapped")


if __name__ == "__main__":
    main()
