"""From a folder to a folder: every image in one storage location is segmented, its cut-out and mask are
kept in another. Works with any storage Airflow's ObjectStoragePath reaches (``file://``, ``s3://`` with a
connection, ...): private images are uploaded through HitPaw's pre-signed upload, results are copied out
before HitPaw deletes them after 8 days.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_hitpaw.example_dags._settings import INPUT_FOLDER, OUTPUT_FOLDER
from airflow_provider_hitpaw.operators.hitpaw import SegmentImageOperator

with DAG(
    dag_id="example_hitpaw_folder",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"input_folder": INPUT_FOLDER, "output_folder": OUTPUT_FOLDER},
    tags=["example", "hitpaw"],
):

    @task
    def images_in_folder(params: dict[str, Any] | None = None) -> list[str]:
        from airflow.providers.common.compat.sdk import ObjectStoragePath

        folder = ObjectStoragePath((params or {})["input_folder"])
        images = [p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"}]
        return sorted(str(p) for p in images)

    SegmentImageOperator.partial(
        task_id="segment",
        output_path="{{ params.output_folder }}",
        # A nightly run pays only for photos that are new or changed since the results were kept.
        overwrite="skip",
        poll_interval=1,
        timeout=1800,
    ).expand(source_path=images_in_folder())
