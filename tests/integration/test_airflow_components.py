"""The provider on real Airflow 3 components: api-server, scheduler, dag-processor and triggerer.

A DAG segments more images than there are worker slots (parallelism 2), through the one-task operator and
through the submit-then-sense pair. Deferred, the waits hold no slot: more tasks are seen ``deferred`` at
once than there are slots, while the emulator still reports their jobs ``CONVERTING``; then all succeed.
The same DAG with ``deferrable=False`` succeeds too. Afterwards the API key is searched for in every log
file and in the metadata database.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

airflow = pytest.importorskip("airflow")
if airflow.__version__.startswith("2."):
    pytest.skip("the component tests run on Airflow 3", allow_module_level=True)

from tests.integration.airflow_cluster import AirflowCluster, running_cluster  # noqa: E402

DAGS = Path(__file__).parent / "dags"
SLOTS = 2


@pytest.fixture(scope="module")
def cluster(
    hitpaw_emulator_server: Any, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[AirflowCluster]:
    with running_cluster(
        hitpaw_emulator_server,
        tmp_path_factory.mktemp("airflow-home"),
        sorted(DAGS.glob("*.py")),
        keep_logs_as="airflow-components",
        keep_logs_if=lambda: request.session.testsfailed,
    ) as cluster:
        yield cluster


@pytest.fixture
def emulator(hitpaw_emulator_server: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    hitpaw_emulator_server.reset()
    yield hitpaw_emulator_server
    hitpaw_emulator_server.reset()


def images(emulator: Any, names: list[str]) -> list[str]:
    return [emulator.sample_url(name) for name in names]


def run_and_watch(
    cluster: AirflowCluster,
    emulator: Any,
    dag_id: str,
    conf: dict[str, Any],
    timeout: float,
    finish_once_deferred: int | None = None,
) -> dict[str, Any]:
    """Trigger a run and follow it to its end; return what was seen on the way.

    With ``finish_once_deferred``, the jobs end (the test ends them) once that many tasks were seen
    deferred at once, not when a timer runs out: how fast the components are changes nothing seen.
    """
    cluster.wait_for_dag(dag_id)
    run_id = cluster.trigger(dag_id, conf)
    most_deferred_while_converting = 0
    ever_deferred = False
    finished = False
    deadline = time.monotonic() + timeout
    state = "queued"
    while time.monotonic() < deadline:
        states = cluster.task_states(dag_id, run_id)
        deferred = sum(1 for _, _, s in states if s == "deferred")
        ever_deferred = ever_deferred or deferred > 0
        jobs = emulator.state()["jobs"]
        converting = sum(1 for job in jobs if job["status"] == "CONVERTING")
        if converting:
            most_deferred_while_converting = max(most_deferred_while_converting, min(deferred, converting))
        if finish_once_deferred is not None and not finished and deferred >= finish_once_deferred:
            for job in jobs:
                emulator.finish_job(job["job_id"])
            finished = True
        state = cluster.run_state(dag_id, run_id)
        if state in ("success", "failed"):
            break
        time.sleep(0.5)
    return {
        "state": state,
        "tasks": cluster.task_states(dag_id, run_id),
        "most_deferred_while_converting": most_deferred_while_converting,
        "ever_deferred": ever_deferred,
        "jobs": emulator.state()["jobs"],
    }


def test_deferrable_waits_hold_no_worker_slot(cluster: AirflowCluster, emulator: Any) -> None:
    # HitPaw works until all six waits are seen deferred (a timer of seconds raced the components).
    emulator.configure(job_seconds=3600)
    conf = {
        "operator_urls": images(emulator, ["shoe.jpg", "portrait.png", "product.webp"]),
        "sensor_urls": images(emulator, ["mug.jpg", "shoe.jpg", "portrait.png"]),
    }
    seen = run_and_watch(cluster, emulator, "hitpaw_it_deferrable", conf, timeout=240, finish_once_deferred=6)
    assert seen["state"] == "success", seen
    waits = [t for t in seen["tasks"] if t[0] in ("segment", "wait")]
    assert len(waits) == 6
    assert all(state == "success" for _, _, state in seen["tasks"]), seen["tasks"]
    # More waits deferred at once than there are worker slots, while HitPaw was still working.
    assert seen["most_deferred_while_converting"] > SLOTS, seen
    # Each image was submitted (and paid for) exactly once.
    assert len(seen["jobs"]) == 6
    assert all(job["status"] == "COMPLETED" for job in seen["jobs"])


def test_blocking_waits_succeed_too(cluster: AirflowCluster, emulator: Any) -> None:
    emulator.configure(job_seconds=2)
    conf = {
        "operator_urls": images(emulator, ["shoe.jpg", "portrait.png"]),
        "sensor_urls": images(emulator, ["mug.jpg", "product.webp"]),
    }
    seen = run_and_watch(cluster, emulator, "hitpaw_it_blocking", conf, timeout=240)
    assert seen["state"] == "success", seen
    assert all(state == "success" for _, _, state in seen["tasks"]), seen["tasks"]
    assert not seen["ever_deferred"]
    assert len(seen["jobs"]) == 4


def test_the_key_is_in_no_log_and_nowhere_in_the_database(cluster: AirflowCluster, emulator: Any) -> None:
    """Runs after the DAG runs above: whatever they wrote is searched for the key."""
    key = emulator.api_key
    leaks = [
        str(path)
        for path in cluster.home.rglob("*")
        if path.is_file() and path.suffix in (".log", "") and key.encode() in path.read_bytes()
    ]
    assert leaks == []
    database = cluster.home / "airflow.db"
    with sqlite3.connect(database) as db:
        tables = [row[0] for row in db.execute("select name from sqlite_master where type='table'")]
        assert {"xcom", "trigger", "rendered_task_instance_fields", "task_instance"} <= set(tables)
        for table in tables:
            for row in db.execute(f'select * from "{table}"'):  # table names come from sqlite itself
                assert key not in repr(row), f"the key is stored in table {table}"
        xcoms = db.execute("select count(*) from xcom").fetchone()[0]
        assert xcoms > 0, "nothing was searched: the runs above wrote no XCom"
