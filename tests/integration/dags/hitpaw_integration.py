"""DAGs the integration tests run on real Airflow components: more images than worker slots, waited for
by the one-task operator and by the submit-then-sense pair, deferrable and blocking."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_hitpaw.operators.hitpaw import SegmentImageBatchOperator, SegmentImageOperator
from airflow_provider_hitpaw.sensors.hitpaw import SegmentationSensor


def build(dag_id: str, deferrable: bool) -> DAG:
    with DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        params={"operator_urls": [], "sensor_urls": []},
    ) as dag:

        @task
        def operator_urls(params: dict[str, Any] | None = None) -> list[str]:
            return list((params or {})["operator_urls"])

        @task
        def sensor_urls(params: dict[str, Any] | None = None) -> list[str]:
            return list((params or {})["sensor_urls"])

        @task
        def job_ids(submissions: list[dict[str, Any]]) -> list[str]:
            return [submission["job_id"] for submission in submissions]

        SegmentImageOperator.partial(
            task_id="segment", poll_interval=1, timeout=600, deferrable=deferrable
        ).expand(file_url=operator_urls())

        submitted = SegmentImageOperator.partial(task_id="submit", wait_for_completion=False).expand(
            file_url=sensor_urls()
        )
        SegmentationSensor.partial(
            task_id="wait",
            poll_interval=1,
            timeout=600,
            deferrable=deferrable,
            mode="poke" if deferrable else "reschedule",
        ).expand(job_id=job_ids(submitted.output))
    return dag


build("hitpaw_it_deferrable", deferrable=True)
build("hitpaw_it_blocking", deferrable=False)


with DAG(
    dag_id="hitpaw_it_batch",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"operator_urls": []},
    render_template_as_native_obj=True,
):
    SegmentImageBatchOperator(
        task_id="segment_all", file_urls="{{ params.operator_urls }}", poll_interval=1, timeout=1800
    )
