"""Many fast jobs on real components with Airflow's defaults: each mapped task defers for a job that ends
about a second later. Airflow 3 can fail a resumed try whose trigger fired within seconds of the
deferral (apache/airflow#66374); the operator's event hold is what keeps these tasks out of that race.

``HITPAW_RACE_HOLD`` (seconds, read when the DAG is parsed) sets ``min_deferred_seconds``; unset means
the provider's default. No retries: a task the race fails stays failed, to be counted.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_hitpaw.operators.hitpaw import SegmentImageOperator

HOLD = os.environ.get("HITPAW_RACE_HOLD")

with DAG(
    dag_id="hitpaw_race",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"urls": []},
):

    @task
    def urls(params: dict[str, Any] | None = None) -> list[str]:
        return list((params or {})["urls"])

    SegmentImageOperator.partial(
        task_id="segment",
        poll_interval=1,
        timeout=600,
        retries=0,
        min_deferred_seconds=None if HOLD is None else float(HOLD),
    ).expand(file_url=urls())
