"""The batch example DAG segments 1,000 URLs from the emulator in one task, under `airflow dags test`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.integration.airflow_cluster import dags_test


def test_a_thousand_images_in_one_task(hitpaw_emulator_server: Any, tmp_path: Path) -> None:
    emulator = hitpaw_emulator_server
    emulator.reset()
    emulator.configure(job_seconds=3)
    run = dags_test("example_hitpaw_batch", emulator, tmp_path)
    output = run.output
    assert run.returncode == 0, output[-4000:]
    assert "success" in output.lower()
    state = emulator.state()
    emulator.reset()
    assert len(state["jobs"]) == 1000
    assert all(job["status"] == "COMPLETED" for job in state["jobs"])
    assert state["requests"]["/api/image-segmentation"] == 1000, "an image was submitted twice"
    assert "1000/1000 completed, 0 failed" in output
    # One task instance did it all: its log reports the whole batch, not a mapped index.
    assert "Batch done: 1000/1000 completed" in output
