"""One task per image: submit, wait in the triggerer, return the result URLs."""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_hitpaw.example_dags._settings import IMAGE_URLS
from airflow_provider_hitpaw.operators.hitpaw import SegmentImageOperator

with DAG(
    dag_id="example_hitpaw_one_task",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"image_url": IMAGE_URLS[0]},
    tags=["example", "hitpaw"],
):
    SegmentImageOperator(
        task_id="segment_image",
        file_url="{{ params.image_url }}",
        poll_interval=2,
        timeout=1800,
    )
