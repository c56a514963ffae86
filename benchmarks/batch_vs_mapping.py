"""Many images on real Airflow 3 components: one SegmentImageBatchOperator against a mapped
SegmentImageOperator (one task instance and one trigger per image).

Printed for each, from one run on one set of components: wall time (trigger to end of the DAG run), task
instances, trigger rows created, and the CPU seconds the components spent meanwhile (scheduler, every
triggerer, the workers that ran the tasks; on the production shape also PostgreSQL and Redis), with
ratios batch / mapped.

Two shapes: ``sqlite`` (SQLite, LocalExecutor, one triggerer) and ``production`` (PostgreSQL, the
CeleryExecutor on Redis, two Celery workers of 2 slots each, two triggerers; what
tests/integration/production/shape.py starts, every server on 127.0.0.1).

    .venv/bin/python benchmarks/batch_vs_mapping.py --images 500
    .venv/bin/python benchmarks/batch_vs_mapping.py --images 500 --shape production
    .venv/bin/python benchmarks/batch_vs_mapping.py --smoke   # 2 images, jobs of 1 s: about a minute
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import sqlalchemy  # noqa: E402
from _harness import print_table  # noqa: E402

from airflow_provider_hitpaw.emulator.server import EmulatorServer  # noqa: E402
from tests.integration.airflow_cluster import AirflowCluster, running_cluster  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

SAMPLES = ["shoe.jpg", "portrait.png", "product.webp", "mug.jpg"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
KEYS = ["state", "wall_s", "task_instances", "trigger_rows", "scheduler_cpu_s", "triggerer_cpu_s"]


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (which may hold spaces): field 3 of stat(5) is index 0."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_seconds(cluster: AirflowCluster, component: str) -> float:
    """CPU seconds of every live process whose command line runs this Airflow component.

    Shells are left out: the production shape's restart loops are subshells whose command line holds
    the whole launch script, every component's name included.
    """
    total = 0.0
    for pid in cluster.descendants():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if Path(f"/proc/{pid}/comm").read_text().strip() == "bash":
                continue
        except OSError:
            continue
        fields = _stat_fields(pid)
        if fields is not None and f"airflow {component}" in cmdline:
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def tree_cpu_seconds(pids: set[int]) -> float:
    """CPU seconds of these processes and of their children that have exited and been reaped.

    Task processes live for one task: their CPU survives only in their parent's cutime/cstime. Given a
    whole process tree, each second is counted once (a reaped child is no longer in the tree).
    """
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += sum(int(value) for value in fields[11:15])
    return total / CLK_TCK


def process_tree(root: int) -> set[int]:
    """A process and everything below it, from /proc (PostgreSQL and Redis are no descendants of the
    Airflow components' group, so AirflowCluster's helpers do not see them)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


@dataclass
class Shape:
    """A running set of components, how to read its metadata database, and what CPU to sample."""

    name: str
    cluster: AirflowCluster
    #: SQLAlchemy engine on the metadata database: SQLite's file or the shape's PostgreSQL.
    metadata: sqlalchemy.Engine
    #: Each CPU figure beside the scheduler's and the triggerers', by its table key.
    extra_cpu: dict[str, Callable[[], float]] = field(default_factory=dict)
    slots: str = ""
    #: DAGs whose run had a task that did not succeed: the components' logs are then kept.
    failed_runs: list[str] = field(default_factory=list)

    def cpu(self) -> dict[str, float]:
        figures = {
            "scheduler_cpu_s": cpu_seconds(self.cluster, "scheduler"),
            "triggerer_cpu_s": cpu_seconds(self.cluster, "triggerer"),
        }
        return figures | {key: sample() for key, sample in self.extra_cpu.items()}


def trigger_ids(metadata: sqlalchemy.Engine) -> set[tuple[int, str]]:
    """The triggers that exist now; sampled through a run, they count the trigger rows it created.

    Keyed by id and creation time: SQLite hands a deleted row's id to the next row.
    """
    with metadata.connect() as connection:
        rows = connection.execute(sqlalchemy.text("select id, created_date from trigger"))
        return {(int(row[0]), str(row[1])) for row in rows}


def measure(shape: Shape, dag_id: str, urls: list[str]) -> dict[str, Any]:
    cluster = shape.cluster
    cluster.wait_for_dag(dag_id)
    seen_triggers: set[tuple[int, str]] = set()
    cpu_before = shape.cpu()
    started = time.monotonic()
    run_id = cluster.trigger(dag_id, {"operator_urls": urls, "sensor_urls": []})
    state = "queued"
    while state not in ("success", "failed"):
        time.sleep(1)
        seen_triggers |= trigger_ids(shape.metadata)
        state = cluster.run_state(dag_id, run_id)
    wall = time.monotonic() - started
    cpu_after = shape.cpu()
    tasks = cluster.task_states(dag_id, run_id)
    not_ok = Counter((task, state) for task, _, state in tasks if state not in ("success", "skipped"))
    if not_ok:
        print(f"{dag_id}: tasks not successful: {dict(not_ok)}", file=sys.stderr)
        shape.failed_runs.append(dag_id)
    return {
        "state": state,
        "wall_s": wall,
        "task_instances": len(tasks),
        "trigger_rows": len(seen_triggers),
        **{key: cpu_after[key] - cpu_before[key] for key in cpu_before},
    }


@contextlib.contextmanager
def metadata_engine(url: str) -> Iterator[sqlalchemy.Engine]:
    """One engine for the run, disposed of before the database goes away."""
    engine = sqlalchemy.create_engine(url, connect_args={"timeout": 30} if url.startswith("sqlite") else {})
    try:
        yield engine
    finally:
        engine.dispose()


@contextlib.contextmanager
def sqlite_shape(
    emulator: EmulatorServer, home: Path, dag_files: list[Path], extra: dict[str, str], slots: int
) -> Iterator[Shape]:
    """The components on SQLite with the LocalExecutor, as the integration tests run them."""
    failed: list[str] = []
    with (
        running_cluster(
            emulator,
            home,
            dag_files,
            extra_env=extra,
            keep_logs_as="batch-vs-mapping-sqlite",
            keep_logs_if=lambda: bool(failed),
        ) as cluster,
        metadata_engine(f"sqlite:///{home / 'airflow.db'}") as metadata,
    ):

        def workers() -> float:
            # The LocalExecutor's workers ("airflow worker -- LocalExecutor"), forked by the scheduler.
            roots = cluster.component_pids("worker")
            return tree_cpu_seconds(set[int]().union(*(cluster.component_processes_of(pid) for pid in roots)))

        yield Shape(
            "sqlite",
            cluster,
            metadata,
            {"worker_cpu_s": workers},
            f"{slots} LocalExecutor worker slots",
            failed,
        )


@contextlib.contextmanager
def production_shape(
    emulator: EmulatorServer, home: Path, dag_files: list[Path], extra: dict[str, str]
) -> Iterator[Shape]:
    """The production shape of tests/integration/production/shape.py, with this benchmark's settings.

    Its ``production_cluster`` takes no environment of its own, so its parts are assembled here as it
    assembles them; the servers are stopped by its context managers, by process group.
    """
    from tests.integration.production.shape import components, postgres, redis, shape_env

    workers = [component for component in components() if component.name == "celery worker"]
    failed: list[str] = []
    with (
        postgres() as database,
        redis() as broker,
        running_cluster(
            emulator,
            home,
            dag_files,
            # PYTHONPATH: the components import the shape's [core] hostname_callable from tests/.
            extra_env={
                **shape_env(database, broker),
                **extra,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            },
            extra_components=components(),
            supervised=frozenset({"api-server", "scheduler", "dag-processor"}),
            keep_logs_as="batch-vs-mapping-production",
            keep_logs_if=lambda: bool(failed),
        ) as cluster,
        metadata_engine(database.url) as metadata,
    ):

        def celery_workers() -> float:
            trees = [cluster.component_processes_of(cluster.pid_of(worker.label)) for worker in workers]
            return tree_cpu_seconds(set[int]().union(*trees))

        def postmaster() -> float:
            pid = int((database.folder / "data" / "postmaster.pid").read_text().split()[0])
            return tree_cpu_seconds(process_tree(pid))

        yield Shape(
            "production",
            cluster,
            metadata,
            {
                "worker_cpu_s": celery_workers,
                "postgres_cpu_s": postmaster,
                "redis_cpu_s": lambda: tree_cpu_seconds(process_tree(broker.process.pid)),
            },
            f"{len(workers)} Celery workers x 2 slots",
            failed,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--job-seconds", type=float, default=5.0)
    parser.add_argument(
        "--slots", type=int, default=4, help="[core] parallelism (the Celery workers have 2 x 2 slots)"
    )
    parser.add_argument("--shape", choices=["sqlite", "production"], default="sqlite")
    parser.add_argument(
        "--smoke", action="store_true", help="2 images, jobs of 1 s, 2 slots: proves the script runs"
    )
    args = parser.parse_args()
    if args.smoke:
        args.images, args.job_seconds, args.slots = 2, 1.0, 2
    dag_file = ROOT / "tests" / "integration" / "dags" / "hitpaw_integration.py"
    extra = {
        "AIRFLOW__CORE__PARALLELISM": str(args.slots),
        # The mapped run has as many task instances as images; let them all be scheduled.
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(max(16, args.images)),
        "AIRFLOW__CORE__MAX_MAP_LENGTH": str(max(1024, args.images)),
    }
    started = time.monotonic()
    with (
        EmulatorServer(job_seconds=args.job_seconds) as emulator,
        tempfile.TemporaryDirectory() as tmp,
        (
            production_shape(emulator, Path(tmp), [dag_file], extra)
            if args.shape == "production"
            else sqlite_shape(emulator, Path(tmp), [dag_file], extra, args.slots)
        ) as shape,
    ):
        urls = [f"{emulator.sample_url(SAMPLES[i % len(SAMPLES)])}?n={i}" for i in range(args.images)]
        rows = {
            "mapped": measure(shape, "hitpaw_it_deferrable", urls),
            "batch": measure(shape, "hitpaw_it_batch", [f"{url}&b=1" for url in urls]),
        }
        title = (
            f"batch_vs_mapping ({shape.name}): {args.images} images, jobs of {args.job_seconds:g} s, "
            f"{shape.slots}, parallelism {args.slots}"
        )
    print_table(title, rows, KEYS + [key for key in rows["mapped"] if key not in KEYS], baseline="mapped")
    print(f"\nratio = batch / mapped; {time.monotonic() - started:.0f} s in all, start-up and stop included")


if __name__ == "__main__":
    main()
