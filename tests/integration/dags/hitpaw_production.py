"""DAGs for the production shape (tests/integration/production): PostgreSQL, Celery, two triggerers.

* ``hitpaw_production_sensors``: one deferred sensor per given job id (a triggerer dies, PostgreSQL
  restarts, the waits go on);
* ``hitpaw_production_batch``: one batch over the given URLs, with a retry (its Celery worker dies while
  it submits; the retry, on the other worker, must not pay again).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_hitpaw.operators.hitpaw import SegmentImageBatchOperator
from airflow_provider_hitpaw.sensors.hitpaw import SegmentationSensor

START = datetime(2026, 1, 1)

with DAG(
    dag_id="hitpaw_production_sensors", schedule=None, start_date=START, catchup=False, params={"job_ids": []}
):

    @task
    def job_ids(params: dict[str, Any] | None = None) -> list[str]:
        return list((params or {})["job_ids"])

    SegmentationSensor.partial(task_id="wait", poll_interval=2, timeout=900).expand(job_id=job_ids())


with DAG(
    dag_id="hitpaw_production_batch",
    schedule=None,
    start_date=START,
    catchup=False,
    params={"urls": []},
    render_template_as_native_obj=True,
):
    SegmentImageBatchOperator(
        task_id="batch",
        file_urls="{{ params.urls }}",
        max_in_flight=2,
        poll_interval=2,
        timeout=900,
        retries=1,
        retry_delay=timedelta(seconds=2),
    )
