"""A thousand images in one task: the batch operator submits them all and waits in one trigger.

Where dynamic task mapping would create a thousand task instances and a thousand triggers, this DAG
creates one of each. By default it segments the emulator's samples a thousand times over (each URL made
unique with a query string); pass your own list as the ``image_urls`` param. Results are kept with
``overwrite="skip"``: run it again and the images whose results are kept are not paid for again.
"""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_hitpaw.example_dags._settings import BATCH_OUTPUT_DIR, IMAGE_URLS
from airflow_provider_hitpaw.operators.hitpaw import SegmentImageBatchOperator

THOUSAND = [f"{IMAGE_URLS[i % len(IMAGE_URLS)]}?copy={i}" for i in range(1000)]

with DAG(
    dag_id="example_hitpaw_batch",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"image_urls": THOUSAND},
    # The list param reaches the operator as a list, not as its text.
    render_template_as_native_obj=True,
    tags=["example", "hitpaw"],
):
    SegmentImageBatchOperator(
        task_id="segment_all",
        file_urls="{{ params.image_urls }}",
        output_path=BATCH_OUTPUT_DIR,
        overwrite="skip",
        max_in_flight=16,
        poll_interval=3,
        timeout=3 * 3600,
        fail_on_error=True,
    )
