"""Sixty fast jobs on real components with Airflow's defaults: none of the tasks fails, each image is paid
once.

Airflow 3 can fail a resumed try whose trigger fired within seconds of the deferral: the executor's
"success" of the try that deferred is processed after the event, and the resumed try is failed
(apache/airflow#66374, #71580, #72716). Without the provider's event hold, 4 to 10 of these 60 tasks
failed (``benchmarks/deferral_race.py`` measures it); with the default hold, none may.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

airflow = pytest.importorskip("airflow")
if airflow.__version__.startswith("2."):
    pytest.skip("Airflow 2 resumes deferred tasks without this race", allow_module_level=True)

from tests.integration.airflow_cluster import AIRFLOW_DEFAULT_HEARTBEATS, running_cluster  # noqa: E402

DAG_FILE = Path(__file__).parent / "dags" / "hitpaw_race.py"
TASKS = 60
RACE_LINE = "but the task instance's state attribute is"


def test_sixty_one_second_jobs_with_airflows_defaults_fail_no_task_and_pay_once(
    hitpaw_emulator_server: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    emulator = hitpaw_emulator_server
    emulator.reset()
    emulator.configure(job_seconds=1)
    with running_cluster(
        emulator,
        tmp_path,
        [DAG_FILE],
        extra_env=AIRFLOW_DEFAULT_HEARTBEATS,  # and no hold set: the provider's default holds
        keep_logs_as="deferral-race",
        keep_logs_if=lambda: request.session.testsfailed,
    ) as cluster:
        cluster.wait_for_dag("hitpaw_race")
        urls = [f"{emulator.sample_url('shoe.jpg')}?n={i}" for i in range(TASKS)]
        run_id = cluster.trigger("hitpaw_race", {"urls": urls})
        deadline = time.monotonic() + 600
        state = "queued"
        while state not in ("success", "failed") and time.monotonic() < deadline:
            time.sleep(2)
            state = cluster.run_state("hitpaw_race", run_id)
        states = Counter(s for task, _, s in cluster.task_states("hitpaw_race", run_id) if task == "segment")
        scheduler_log = (tmp_path / "component-logs" / "scheduler.log").read_text(errors="replace")
        race_lines = scheduler_log.count(RACE_LINE)
    jobs = emulator.state()["jobs"]
    emulator.reset()
    print(f"\n{TASKS} tasks: {dict(states)}; Airflow's race line seen {race_lines} times; {len(jobs)} jobs")
    assert state == "success", (state, states)
    assert states == Counter({"success": TASKS})
    # Each image paid once: one job per URL, none twice.
    assert len(jobs) == TASKS
    assert len({job["file_url"] for job in jobs}) == TASKS
