"""A product catalogue to storefront images, in one task: every ``<sku>/main.*`` photo below a folder is
segmented, kept under its own SKU's folder, finished as a white square JPEG for a marketplace and a small
WebP thumbnail, and checked: cut-outs whose mask looks wrong are flagged, first on a contact sheet a
person can look through. A nightly run pays only for new or changed photos; a changed finish is made
again from the kept cut-outs, without paying HitPaw. The storefront images are then published: the good
ones at once; the suspects, on Airflow 3.1 and later, once a person approves them (Airflow's
human-in-the-loop ApprovalOperator, its default Reject after ``approval_hours``); on earlier lines they
stay unpublished and the report names them. This is the DAG ``hitpaw-demo`` and ``make demo`` run against
the local emulator. Needs the ``[finish]`` extra (Pillow).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_hitpaw.example_dags._settings import (
    APPROVAL,
    APPROVAL_HOURS,
    CATALOGUE_FOLDER,
    CATALOGUE_OUTPUT,
    PUBLISH_FOLDER,
)
from airflow_provider_hitpaw.operators.hitpaw import SegmentImageBatchOperator

try:  # Airflow 3.1 and later: a person approves the suspects in the UI
    from airflow.providers.standard.operators.hitl import ApprovalOperator as _Approval

    Approval: Any = _Approval
except Exception:  # earlier lines (no standard provider, or one that refuses before 3.1): a report
    Approval = None

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
    params={
        "catalogue": CATALOGUE_FOLDER,
        "output_folder": CATALOGUE_OUTPUT,
        "publish_folder": PUBLISH_FOLDER,
    },
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
    def review(results: list[dict[str, Any]]) -> str:
        """One line per SKU, the suspects apart, the cost; returns the suspects as the approval shows them."""
        for result in results:
            finishes = ", ".join(sorted(result.get("finishes") or {}))
            print(f"{result['source_path']} -> job {result['job_id']}: {result['res_path']} ({finishes})")
        suspects = [r for r in results if r.get("suspect")]
        for result in suspects:
            print(f"Suspect: {result['source_path']}: {result['suspect']}")
        coins = sum(r["consume_coins"] or 0 for r in results)
        print(f"{len(suspects)} suspect(s); {sum(not r['reused'] for r in results)} jobs cost {coins} coins")
        return "\n".join(f"- `{r['source_path']}`: {r['suspect']}" for r in suspects)

    @task
    def publish(results: list[dict[str, Any]], suspects: bool, params: dict[str, Any] | None = None) -> int:
        """Copy the storefront images of the good cut-outs (or of the approved suspects) to the shop."""
        from airflow.providers.common.compat.sdk import ObjectStoragePath

        shop = ObjectStoragePath((params or {})["publish_folder"])
        output = str(ObjectStoragePath((params or {})["output_folder"])).rstrip("/") + "/"
        published = 0
        for result in results:
            storefront = (result.get("finishes") or {}).get("storefront")
            if not storefront or bool(result.get("suspect")) != suspects:
                continue
            source = ObjectStoragePath(storefront)
            target = shop / str(source).removeprefix(output)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
            published += 1
        print(f"Published {published} storefront image(s){' (approved suspects)' if suspects else ''}")
        return published

    @task.short_circuit
    def any_suspects(results: list[dict[str, Any]]) -> bool:
        return any(r.get("suspect") for r in results)

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
    results: Any = segmented.output
    summary = review(results)
    publish.override(task_id="publish")(results, suspects=False)
    if Approval is not None and APPROVAL != "off":
        approve = Approval(
            task_id="approve_suspects",
            subject="Publish the cut-outs that look wrong?",
            body="Flagged (see the contact sheet):\n\n{{ ti.xcom_pull(task_ids='review') }}",
            defaults="Reject",
            response_timeout=timedelta(hours=APPROVAL_HOURS),
        )
        (
            summary
            >> any_suspects(results)
            >> approve
            >> publish.override(task_id="publish_suspects")(results, suspects=True)
        )
