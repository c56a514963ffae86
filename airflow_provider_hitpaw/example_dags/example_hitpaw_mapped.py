"""Fan out over a list of images with dynamic task mapping, keep each cut-out and mask, report the cost.

Each mapped task keeps its results in ``HITPAW_EXAMPLE_OUTPUT_DIR`` (HitPaw deletes them after 8 days),
named after its input (``shoe-<hash>.png``, ``shoe-<hash>_mask.png``), so that inputs of the same name in
different folders never overwrite each other. This is the DAG ``hitpaw-demo`` and ``make demo`` run
against the local emulator.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_hitpaw.example_dags._settings import IMAGE_URLS, OUTPUT_DIR
from airflow_provider_hitpaw.operators.hitpaw import SegmentImageOperator

with DAG(
    dag_id="example_hitpaw_mapped",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"image_urls": IMAGE_URLS, "output_dir": OUTPUT_DIR},
    tags=["example", "hitpaw"],
):

    @task
    def image_urls(params: dict[str, Any] | None = None) -> list[str]:
        return list((params or {})["image_urls"])

    @task
    def report(results: list[dict[str, Any]]) -> int:
        """One line per image, and what the run cost (a cost HitPaw did not state counts as unknown)."""
        known = [r["consume_coins"] for r in results if r.get("consume_coins") is not None]
        for result in results:
            print(
                f"{result['file_url']} -> job {result['job_id']}: {result['res_path']}, {result['mask_path']}"
            )
        unknown = len(results) - len(known)
        print(
            f"Kept {2 * len(results)} files; {len(results)} jobs cost {sum(known)} coins"
            + (f" ({unknown} of unknown cost)" if unknown else "")
        )
        return sum(known)

    segmented = SegmentImageOperator.partial(
        task_id="segment",
        output_path="{{ params.output_dir }}",
        poll_interval=1,
        timeout=1800,
    ).expand(file_url=image_urls())
    # TaskFlow turns the XComArg into the list at run time, which a type checker cannot see.
    report(segmented.output)  # type: ignore[arg-type]
