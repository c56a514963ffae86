"""The production shape (PostgreSQL, the CeleryExecutor on Redis, two workers, two triggerers) on this
machine, every server on 127.0.0.1: the waits survive a triggerer's death and a database restart, and a
batch whose worker dies while it submits pays, on its retry, for nothing it had recorded as paid.

One cluster for the module; the emulator runs in this process.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

airflow = pytest.importorskip("airflow")
if airflow.__version__.startswith("2."):
    pytest.skip("the production shape runs on Airflow 3", allow_module_level=True)
pytest.importorskip("airflow.providers.celery")
psycopg2 = pytest.importorskip("psycopg2")

from airflow_provider_hitpaw._ledger_store import LedgerStore  # noqa: E402
from airflow_provider_hitpaw.emulator.runner import EmulatorServer  # noqa: E402
from tests.integration.production.shape import PG_BIN, Postgres, production_cluster  # noqa: E402

if PG_BIN is None:
    pytest.skip("PostgreSQL is not installed", allow_module_level=True)

DAG_FILE = Path(__file__).parents[1] / "dags" / "hitpaw_production.py"
SUBMIT_ROUTE = "/api/image-segmentation"
STATUS_ROUTE = "/api/task-status"


@pytest.fixture(scope="module")
def emulator_server() -> Iterator[EmulatorServer]:
    with EmulatorServer(job_seconds=3) as server:
        yield server


@pytest.fixture(scope="module")
def shape(
    emulator_server: EmulatorServer, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[tuple[Any, Postgres]]:
    with production_cluster(
        emulator_server,
        tmp_path_factory.mktemp("airflow-home-production"),
        [DAG_FILE],
        keep_logs_as="airflow-production",
        keep_logs_if=lambda: request.session.testsfailed,
    ) as found:
        yield found


@pytest.fixture
def emulator(emulator_server: EmulatorServer) -> Iterator[EmulatorServer]:
    emulator_server.reset()
    yield emulator_server
    emulator_server.reset()


def sql(database: Postgres, query: str) -> list[tuple[Any, ...]]:
    connection = psycopg2.connect(host="127.0.0.1", port=database.port, user="postgres", dbname="airflow")
    try:
        with connection.cursor() as cursor:
            cursor.execute(query)
            return list(cursor.fetchall())
    finally:
        connection.close()


def submit_jobs(emulator: EmulatorServer, count: int) -> list[str]:
    urls = [f"{emulator.sample_url('shoe.jpg')}?n={i}" for i in range(count)]
    with requests.Session() as session:
        session.headers["Apikey"] = emulator.api_key
        return [
            str(
                session.post(emulator.url(SUBMIT_ROUTE), json={"file_url": url}, timeout=10).json()["data"][
                    "job_id"
                ]
            )
            for url in urls
        ]


def wait_until(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(1)


def task_instances(cluster: Any, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    answer = cluster.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
    return list(answer["task_instances"])


def finish(cluster: Any, dag_id: str, run_id: str, timeout: float) -> str:
    state = "queued"
    deadline = time.monotonic() + timeout
    while state not in ("success", "failed"):
        if time.monotonic() > deadline:
            raise AssertionError(f"{dag_id} still {state}: {task_instances(cluster, dag_id, run_id)}")
        time.sleep(2)
        state = cluster.run_state(dag_id, run_id)
    return state


def triggers_by_triggerer(database: Postgres) -> dict[str, int]:
    rows = sql(
        database,
        "select j.hostname, count(*) from trigger t join job j on t.triggerer_id = j.id group by j.hostname",
    )
    return {str(host): int(count) for host, count in rows}


def test_a_killed_triggerers_waits_go_to_the_other_one_with_their_deadlines(
    shape: tuple[Any, Postgres], emulator: EmulatorServer
) -> None:
    cluster, database = shape
    # The jobs are held open until the triggers have moved (a minute's timer raced the components).
    emulator.configure(job_seconds=3600)
    jobs = submit_jobs(emulator, 12)
    cluster.wait_for_dag("hitpaw_production_sensors")
    run_id = cluster.trigger("hitpaw_production_sensors", {"job_ids": jobs})

    def all_assigned() -> bool:
        return sum(triggers_by_triggerer(database).values()) == len(jobs)

    wait_until("every sensor's trigger to run in a triggerer", all_assigned, timeout=180)
    before = dict(sql(database, "select id, kwargs from trigger"))
    holder = max(triggers_by_triggerer(database).items(), key=lambda item: item[1])[0]
    # SIGKILL, as the OOM killer would: the triggerer and its trigger runner go at once.
    victims = cluster.component_processes_of(cluster.pid_of(holder))
    for pid in victims:
        with_suppressed_kill(pid)
    cluster.wait_gone(victims, timeout=15)

    survivor = "triggerer-2" if holder == "triggerer-1" else "triggerer-1"
    wait_until(
        f"the triggers of {holder} to move to {survivor}",
        lambda: triggers_by_triggerer(database) == {survivor: len(jobs)},
        timeout=120,
    )
    after = dict(sql(database, "select id, kwargs from trigger"))
    assert after == before, "a trigger was re-created or its arguments (its deadline) changed"

    for job_id in jobs:
        assert emulator.finish_job(job_id)
    assert finish(cluster, "hitpaw_production_sensors", run_id, timeout=300) == "success"
    waits = [
        ti for ti in task_instances(cluster, "hitpaw_production_sensors", run_id) if ti["task_id"] == "wait"
    ]
    assert len(waits) == len(jobs)
    assert {(ti["state"], ti["try_number"]) for ti in waits} == {("success", 1)}, waits


def with_suppressed_kill(pid: int) -> None:
    import contextlib
    import os

    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def test_a_database_restart_loses_no_deferred_wait(
    shape: tuple[Any, Postgres], emulator: EmulatorServer
) -> None:
    cluster, database = shape
    # The jobs are held open until the database has been restarted and the waits poll again; then they end.
    emulator.configure(job_seconds=3600)
    jobs = submit_jobs(emulator, 50)
    cluster.wait_for_dag("hitpaw_production_sensors")
    run_id = cluster.trigger("hitpaw_production_sensors", {"job_ids": jobs})

    def deferred() -> int:
        return sum(
            ti["state"] == "deferred" for ti in task_instances(cluster, "hitpaw_production_sensors", run_id)
        )

    wait_until("the 50 sensors to defer", lambda: deferred() == 50, timeout=240)
    database.restart()
    polls_at_restart = status_polls(emulator)
    wait_until(
        "the waits to poll again", lambda: status_polls(emulator) >= polls_at_restart + 100, timeout=120
    )
    for job_id in jobs:
        assert emulator.finish_job(job_id)
    assert finish(cluster, "hitpaw_production_sensors", run_id, timeout=400) == "success"
    waits = [
        ti for ti in task_instances(cluster, "hitpaw_production_sensors", run_id) if ti["task_id"] == "wait"
    ]
    assert len(waits) == 50
    assert {ti["state"] for ti in waits} == {"success"}


def status_polls(emulator: EmulatorServer) -> int:
    return int(emulator.state()["requests"].get(STATUS_ROUTE, 0))


def test_a_worker_killed_while_a_batch_submits_costs_its_retry_nothing_recorded(
    shape: tuple[Any, Postgres], emulator: EmulatorServer
) -> None:
    cluster, _ = shape
    # Slow submissions: the batch is still submitting when its worker dies.
    emulator.set_faults([f"slow:delay_s=0.3,paths={SUBMIT_ROUTE}"])
    # Names of different lengths: PostgreSQL's JSONB returns the deferral's carried mappings with their
    # keys reordered (shortest first), which once paired images with other images' jobs.
    samples = ["portrait.png", "shoe.jpg", "product.webp", "mug.jpg"]
    urls = [f"{emulator.sample_url(samples[i % 4])}?batch={i}" for i in range(40)]
    cluster.wait_for_dag("hitpaw_production_batch")
    run_id = cluster.trigger("hitpaw_production_batch", {"urls": urls})
    # Past the first flush of the batch's record (every 2 s), so that the retry has a record to reuse.
    wait_until(
        "the batch to have submitted two dozen images",
        lambda: len(emulator.state()["jobs"]) >= 24,
        timeout=180,
    )
    [ti] = task_instances(cluster, "hitpaw_production_batch", run_id)
    worker = str(ti["hostname"])
    assert worker.startswith("worker-"), ti
    victims = cluster.component_processes_of(cluster.pid_of(worker))
    for pid in victims:
        with_suppressed_kill(pid)
    killed_at_jobs = len(emulator.state()["jobs"])
    cluster.wait_gone(victims, timeout=15)

    assert finish(cluster, "hitpaw_production_batch", run_id, timeout=600) == "success"
    [ti] = task_instances(cluster, "hitpaw_production_batch", run_id)
    assert ti["try_number"] == 2, ti
    assert ti["hostname"] != worker, "the retry ran on the dead worker?"
    jobs = sorted(emulator.state()["jobs"], key=lambda job: job["submitted_at"])
    submitted_urls = [job["file_url"] for job in jobs]
    paid_twice = len(submitted_urls) - len(set(submitted_urls))
    # The record is flushed every FLUSH_SECONDS: what the first try submitted in its last such interval
    # before it died (by HitPaw's clock), and the 2 answers still on their way, may be paid for again.
    first_try = jobs[:1]
    for job in jobs[1:]:  # the retry starts once the worker is found dead, seconds after the last of these
        if job["submitted_at"] - first_try[-1]["submitted_at"] > 5:
            break
        first_try.append(job)
    last = first_try[-1]["submitted_at"]
    unrecorded = sum(1 for job in first_try if job["submitted_at"] >= last - LedgerStore.FLUSH_SECONDS - 0.5)
    print(
        f"\nkilled at {killed_at_jobs} jobs; {len(jobs)} jobs for {len(urls)} images ({paid_twice} paid "
        f"twice; {unrecorded} submitted in the last flush interval)"
    )
    assert set(submitted_urls) == set(urls)
    ti_path = f"/dags/hitpaw_production_batch/dagRuns/{quote(run_id, safe='')}/taskInstances/batch"
    results = cluster.request("GET", f"{ti_path}/xcomEntries/return_value")["value"]
    made_from = {job["job_id"]: job["file_url"] for job in jobs}
    assert [r["file_url"] for r in results] == urls
    assert [made_from[r["job_id"]] for r in results] == urls, "an image was given another image's job"
    # The rest the retry found in the record and reused.
    assert paid_twice <= unrecorded, f"{paid_twice} images paid twice, {unrecorded} unrecorded at most"
    assert paid_twice < killed_at_jobs, "the retry reused nothing of the record"
