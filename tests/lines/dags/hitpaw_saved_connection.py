"""A submission through a connection saved in the metadata database, then a wait in the triggerer: what an
encrypted connection and a deferral need from the installed line (both go through Airflow's Fernet)."""

from __future__ import annotations

import os
from datetime import datetime

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_hitpaw.operators.hitpaw import SegmentImageOperator
from airflow_provider_hitpaw.sensors.hitpaw import SegmentationSensor

with DAG(dag_id="hitpaw_saved_connection", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    submit = SegmentImageOperator(
        task_id="submit",
        file_url=os.environ["HITPAW_TEST_IMAGE_URL"],
        hitpaw_conn_id="hitpaw_saved",
        wait_for_completion=False,
    )
    # `airflow dags test` runs triggers outside the task runner, where Airflow 3 sees only environment
    # connections: the wait reads hitpaw_default, which the test runner sets that way.
    wait = SegmentationSensor(
        task_id="wait",
        job_id="{{ ti.xcom_pull(task_ids='submit')['job_id'] }}",
        deferrable=True,
        poll_interval=1,
        timeout=300,
    )
    submit >> wait
