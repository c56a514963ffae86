"""Fan out over a list of images with dynamic task mapping, then keep the cut-outs and masks.

HitPaw deletes results after 8 days, so the last task copies them into ``HITPAW_EXAMPLE_OUTPUT_DIR``.
This is the DAG ``make demo`` runs against the local emulator.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from _hitpaw_example_settings import IMAGE_URLS, OUTPUT_DIR
from airflow.providers.common.compat.sdk import DAG, task

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
    def save_results(results: list[dict[str, Any]], params: dict[str, Any] | None = None) -> list[str]:
        """Download each cut-out and mask next to each other, named after the input image."""
        import pathlib
        import posixpath
        from urllib.parse import urlsplit

        import requests

        out = pathlib.Path((params or {})["output_dir"]).resolve()
        out.mkdir(parents=True, exist_ok=True)
        written: list[str] = []
        total_coins = 0
        with requests.Session() as session:
            for result in results:
                stem = posixpath.splitext(posixpath.basename(urlsplit(result["file_url"]).path))[0]
                stem = stem or result["job_id"]
                for kind, url in (("", result["res_url"]), ("_mask", result["mask_url"])):
                    response = session.get(url, timeout=60)
                    response.raise_for_status()
                    target = out / f"{stem}{kind}.png"
                    target.write_bytes(response.content)
                    written.append(str(target))
                total_coins += int(result["consume_coins"] or 0)
                print(f"{result['file_url']} -> job {result['job_id']}, {result['consume_coins']} coins")
        print(f"Wrote {len(written)} files to {out}; {len(results)} jobs cost {total_coins} coins")
        return written

    segmented = SegmentImageOperator.partial(task_id="segment", poll_interval=1, timeout=1800).expand(
        file_url=image_urls()
    )
    save_results(segmented.output)
