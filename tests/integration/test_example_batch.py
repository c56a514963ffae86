"""The batch example DAG segments 1,000 URLs from the emulator in one task, under `airflow dags test`, and
a second night over the same catalogue pays nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.integration.airflow_cluster import dags_test


def test_a_thousand_images_in_one_task_and_a_second_night_for_free(
    hitpaw_emulator_server: Any, tmp_path: Path
) -> None:
    emulator = hitpaw_emulator_server
    emulator.reset()
    emulator.configure(job_seconds=3)
    coins_before = emulator.state()["coins"]
    kept = {"HITPAW_EXAMPLE_BATCH_OUTPUT_DIR": f"file://{tmp_path}/cutouts"}
    run = dags_test("example_hitpaw_batch", emulator, tmp_path / "night-1", kept)
    output = run.output
    assert run.returncode == 0, output[-4000:]
    assert "success" in output.lower()
    state = emulator.state()
    assert len(state["jobs"]) == 1000
    assert all(job["status"] == "COMPLETED" for job in state["jobs"])
    assert state["requests"]["/api/image-segmentation"] == 1000, "an image was submitted twice"
    assert "1000/1000 completed, 0 failed" in output
    # One task instance did it all: its log reports the whole batch, not a mapped index.
    assert "Batch done: 1000/1000 completed" in output
    night_1_coins = coins_before - state["coins"]
    assert len(list((tmp_path / "cutouts").glob("*_mask.png"))) == 1000

    second = dags_test("example_hitpaw_batch", emulator, tmp_path / "night-2", kept)
    after = emulator.state()
    emulator.reset()
    assert second.returncode == 0, second.output[-4000:]
    night_2_coins = state["coins"] - after["coins"]
    print(f"\nthe 1,000-image example: night 1 paid {night_1_coins} coins, night 2 {night_2_coins}")
    assert night_1_coins == 20_000
    assert after["requests"]["/api/image-segmentation"] == 1000, "the second night submitted"
    assert night_2_coins == 0
    assert "1,000 kept, 0 to submit" in second.output
