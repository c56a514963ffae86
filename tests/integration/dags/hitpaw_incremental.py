"""A nightly catalogue run, for tests/integration/test_incremental.py: the catalogue's photos (local files,
one ``main.jpg`` per product folder) in one batch, and hero images (URLs) one mapped task each, all kept
in ``output`` with ``overwrite="skip"``; a last task writes what both returned to ``report``.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_hitpaw.operators.hitpaw import SegmentImageBatchOperator, SegmentImageOperator

with DAG(
    dag_id="hitpaw_incremental",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"sources": [], "urls": [], "output": "", "report": ""},
    render_template_as_native_obj=True,
):
    catalogue = SegmentImageBatchOperator(
        task_id="catalogue",
        source_paths="{{ params.sources }}",
        output_path="{{ params.output }}/catalogue",
        overwrite="skip",
        poll_interval=1,
        max_in_flight=4,
    )

    @task
    def hero_urls(params: dict[str, Any] | None = None) -> list[str]:
        return list((params or {})["urls"])

    heroes = SegmentImageOperator.partial(
        task_id="hero", output_path="{{ params.output }}/heroes", overwrite="skip", poll_interval=1
    ).expand(file_url=hero_urls())

    @task
    def report(
        catalogue: list[dict[str, Any]], heroes: list[dict[str, Any]], params: dict[str, Any] | None = None
    ) -> None:
        Path((params or {})["report"]).write_text(
            json.dumps({"catalogue": list(catalogue), "heroes": list(heroes)}, ensure_ascii=False)
        )

    report(catalogue.output, heroes.output)
