"""The folder example DAG, end to end under `airflow dags test`: images read from one folder (uploaded
through the pre-signed upload), cut-outs and masks written to another."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests

from tests.integration.airflow_cluster import dags_test


def test_folder_in_folder_out(hitpaw_emulator_server: Any, tmp_path: Path) -> None:
    emulator = hitpaw_emulator_server
    emulator.reset()
    emulator.configure(job_seconds=1)
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    for name in ("shoe.jpg", "portrait.png", "product.webp"):
        (inbox / name).write_bytes(requests.get(emulator.sample_url(name), timeout=10).content)
    (inbox / "notes.txt").write_text("not an image: left alone")
    run = dags_test(
        "example_hitpaw_folder",
        emulator,
        tmp_path / "airflow",
        {
            "HITPAW_EXAMPLE_INPUT_FOLDER": f"file://{inbox}",
            "HITPAW_EXAMPLE_OUTPUT_FOLDER": f"file://{outbox}",
        },
    )
    state = emulator.state()
    emulator.reset()
    assert run.returncode == 0, run.output[-4000:]
    from airflow_provider_hitpaw._kept import record_name
    from airflow_provider_hitpaw._png import check_png
    from airflow_provider_hitpaw.storage import result_names

    inputs = [f"file://{inbox}/{name}" for name in ("shoe.jpg", "portrait.png", "product.webp")]
    pairs = [result_names(source) for source in inputs]
    expected = [name for cutout, mask in pairs for name in (cutout, mask, record_name(cutout))]
    assert sorted(p.name for p in outbox.iterdir() if not p.name.startswith(".hitpaw-")) == sorted(expected)
    for path in outbox.glob("*.png"):
        check_png(path.read_bytes())
    assert state["uploads"] == 3
    assert len(state["jobs"]) == 3
