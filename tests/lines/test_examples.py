"""Every shipped example DAG end to end under ``airflow dags test``, on the Airflow line of the venv that
runs this file (``make lines`` runs it on each): submitted, waited for in the triggerer the command runs,
resumed, and kept, against the local emulator.

The batch example runs a small list here (its thousand images run on the newest line, in
tests/integration/test_example_batch.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_hitpaw._kept import record_name
from airflow_provider_hitpaw._png import check_png
from airflow_provider_hitpaw.storage import result_names

EXAMPLES = Path(__file__).resolve().parents[2] / "airflow_provider_hitpaw" / "example_dags"


def kept_files(source: str) -> list[str]:
    """What keeping one input leaves in the output folder: its cut-out, its mask and the record of both."""
    cutout, mask = result_names(source)
    return [cutout, mask, record_name(cutout)]


@pytest.fixture
def run(hitpaw_emulator: Any, hitpaw_dag_run: Any) -> Any:
    hitpaw_emulator.configure(job_seconds=1)

    def run_example(
        dag_id: str, conf: dict[str, Any] | None = None, env: dict[str, str] | None = None
    ) -> Any:
        settings = {"HITPAW_EXAMPLE_SAMPLE_BASE_URL": f"{hitpaw_emulator.base_url}/samples", **(env or {})}
        result = hitpaw_dag_run(EXAMPLES, dag_id, conf=conf, env=settings)
        assert result.succeeded, result.output[-6000:]
        return result

    return run_example


def test_one_task(run: Any, hitpaw_emulator: Any) -> None:
    run("example_hitpaw_one_task")
    [job] = hitpaw_emulator.state()["jobs"]
    assert job["status"] == "COMPLETED"


def test_two_step(run: Any, hitpaw_emulator: Any) -> None:
    run("example_hitpaw_two_step")
    assert len(hitpaw_emulator.state()["jobs"]) == 1


def test_mapped_keeps_every_result_and_reports_the_cost(
    run: Any, hitpaw_emulator: Any, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = run("example_hitpaw_mapped", env={"HITPAW_EXAMPLE_OUTPUT_DIR": f"file://{out}"})
    assert "4 jobs cost 80 coins" in result.output
    names = [
        name
        for sample in ("shoe.jpg", "portrait.png", "product.webp", "mug.jpg")
        for name in kept_files(f"{hitpaw_emulator.base_url}/samples/{sample}")
    ]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".hitpaw-")) == sorted(names)
    for path in out.glob("*.png"):
        check_png(path.read_bytes())


def test_folder_to_folder(run: Any, hitpaw_emulator: Any, tmp_path: Path) -> None:
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    for name in ("shoe.jpg", "portrait.png"):
        (inbox / name).write_bytes(requests.get(hitpaw_emulator.sample_url(name), timeout=10).content)
    run(
        "example_hitpaw_folder",
        env={
            "HITPAW_EXAMPLE_INPUT_FOLDER": f"file://{inbox}",
            "HITPAW_EXAMPLE_OUTPUT_FOLDER": f"file://{outbox}",
        },
    )
    expected = [
        name for file in ("shoe.jpg", "portrait.png") for name in kept_files(f"file://{inbox}/{file}")
    ]
    assert sorted(p.name for p in outbox.iterdir() if not p.name.startswith(".hitpaw-")) == sorted(expected)
    assert hitpaw_emulator.state()["uploads"] == 2


def test_batch(run: Any, hitpaw_emulator: Any, tmp_path: Path) -> None:
    urls = [f"{hitpaw_emulator.sample_url('shoe.jpg')}?copy={i}" for i in range(20)]
    kept = {"HITPAW_EXAMPLE_BATCH_OUTPUT_DIR": f"file://{tmp_path}/batch"}
    result = run("example_hitpaw_batch", conf={"image_urls": urls}, env=kept)
    assert len(hitpaw_emulator.state()["jobs"]) == 20
    assert "Batch done: 20/20 completed" in result.output


def test_catalogue_to_storefront(run: Any, hitpaw_emulator: Any, tmp_path: Path) -> None:
    """The catalogue example on this line: SKU folders kept, finishes beside each cut-out, a sheet."""
    catalogue, out = tmp_path / "catalogue", tmp_path / "storefront"
    for number, name in enumerate(("shoe.jpg", "mug.jpg"), start=1):
        (catalogue / f"sku-{number}").mkdir(parents=True)
        photo = requests.get(hitpaw_emulator.sample_url(name), timeout=10).content
        (catalogue / f"sku-{number}" / "main.jpg").write_bytes(photo)
    env = {
        "HITPAW_EXAMPLE_CATALOGUE": f"file://{catalogue}",
        "HITPAW_EXAMPLE_CATALOGUE_OUTPUT": f"file://{out}",
        "HITPAW_EXAMPLE_PUBLISH_FOLDER": f"file://{tmp_path}/shop",
        "HITPAW_EXAMPLE_APPROVAL": "off",  # `airflow dags test` runs no scheduler to end the wait
    }
    result = run("example_hitpaw_catalogue", env=env)
    assert "0 suspect(s); 2 jobs cost 40 coins" in result.output
    for sku in ("sku-1", "sku-2"):
        names = sorted(p.name for p in (out / sku).iterdir())
        assert names == [
            "main.hitpaw.json",
            "main.png",
            "main.storefront.jpg",
            "main.thumb.webp",
            "main_mask.png",
        ]
    assert list(out.glob(".hitpaw-contact-sheets/**/page-001.jpg"))
    assert sorted(p.parent.name for p in (tmp_path / "shop").glob("*/main.storefront.jpg")) == [
        "sku-1",
        "sku-2",
    ]
    again = run("example_hitpaw_catalogue", env=env)
    assert "0 jobs cost 0 coins" in again.output
