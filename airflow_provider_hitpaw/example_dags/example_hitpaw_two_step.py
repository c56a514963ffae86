"""Submit in one task, wait in another: the wait can then be retried, timed and alerted on by itself."""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_hitpaw.example_dags._settings import IMAGE_URLS
from airflow_provider_hitpaw.operators.hitpaw import SegmentImageOperator
from airflow_provider_hitpaw.sensors.hitpaw import SegmentationSensor

with DAG(
    dag_id="example_hitpaw_two_step",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"image_url": IMAGE_URLS[0]},
    tags=["example", "hitpaw"],
):
    submit = SegmentImageOperator(
        task_id="submit",
        file_url="{{ params.image_url }}",
        wait_for_completion=False,
    )
    wait = SegmentationSensor(
        task_id="wait_for_cutout",
        job_id="{{ ti.xcom_pull(task_ids='submit')['job_id'] }}",
        poll_interval=2,
        timeout=1800,
    )
    submit >> wait
