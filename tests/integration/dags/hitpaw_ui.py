"""The DAG the browser test runs on real Airflow components: one deferrable SegmentImageOperator whose
finished task instance the Airflow UI then shows, with its extra links."""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_hitpaw.operators.hitpaw import SegmentImageOperator

with DAG(
    dag_id="hitpaw_ui",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"file_url": ""},
):
    SegmentImageOperator(
        task_id="segment",
        file_url="{{ params.file_url }}",
        poll_interval=1,
        timeout=600,
        deferrable=True,
    )
