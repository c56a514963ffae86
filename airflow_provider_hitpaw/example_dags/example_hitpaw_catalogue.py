"""A product catalogue to storefront images, in one task: every ``<sku>/main.*`` photo below a folder is
segmented, kept under its own SKU's folder, finished as a white square JPEG for a marketplace and a small
WebP thumbnail, and checked: cut-outs whose mask looks wrong are flagged, first on a contact sheet a
person can look through. A nightly run pays only for new or changed photos; a changed finish is made
again from the kept cut-outs, without paying HitPaw. This is the DAG ``hitpaw-demo`` and ``make demo``
run against the local emulator. Needs the ``[finish]`` extra (Pillow).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_hitpaw.example_dags._settings import CATALOGUE_FOLDER, CATALOGUE_OUTPUT
from airflow_provider_hitpaw.operators.hitpaw import SegmentImageBatchOperator

#: What a marketplace asks for (a white 2000 x 2000 JPEG, the product filling 85% of it), and a thumbnail.
FINISHES = {
    "storefront": {
        "background": "white",
        "crop": True,
        "margin": "2%",
        "canvas": "2000x2000",
        "fill": 0.85,
        "format": "jpeg",
        "quality": 90,
    },
    "thumb": {"format": "webp", "max_side": 400},
}

with DAG(
    dag_id="example_hitpaw_catalogue",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"catalogue": CATALOGUE_FOLDER, "output_folder": CATALOGUE_OUTPUT},
    tags=["example", "hitpaw"],
):

    @task
    def catalogue_photos(params: dict[str, Any] | None = None) -> list[str]:
        """Every SKU folder's photos (``main.jpg`` and its like)."""
        from airflow.providers.common.compat.sdk import ObjectStoragePath

        catalogue = ObjectStoragePath((params or {})["catalogue"])
        photos = [
            photo
            for sku in catalogue.iterdir()
            if sku.is_dir()
            for photo in sku.iterdir()
            if photo.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"}
        ]
        return sorted(str(photo) for photo in photos)

    @task
    def review(results: list[dict[str, Any]]) -> int:
        """One line per SKU, the suspects apart (a person looks at them on the contact sheet), the cost."""
        for result in results:
            finishes = ", ".join(sorted(result.get("finishes") or {}))
            print(f"{result['source_path']} -> job {result['job_id']}: {result['res_path']} ({finishes})")
        suspects = [r for r in results if r.get("suspect")]
        for result in suspects:
            print(f"Suspect: {result['source_path']}: {result['suspect']}")
        coins = sum(r["consume_coins"] or 0 for r in results)
        print(f"{len(suspects)} suspect(s); {sum(not r['reused'] for r in results)} jobs cost {coins} coins")
        return coins

    segmented = SegmentImageBatchOperator(
        task_id="segment_catalogue",
        source_paths=catalogue_photos(),  # type: ignore[arg-type]  # an XComArg, the list at run time
        output_path="{{ params.output_folder }}",
        output_layout="mirror",
        input_root="{{ params.catalogue }}",
        overwrite="skip",
        finish=FINISHES,
        poll_interval=1,
        timeout=1800,
    )
    # TaskFlow turns the XComArg into the list at run time, which a type checker cannot see.
    review(segmented.output)  # type: ignore[arg-type]
