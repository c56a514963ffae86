"""The batch example DAG segments 1,000 URLs from the emulator in one task, under `airflow dags test`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def test_a_thousand_images_in_one_task(hitpaw_emulator_server: Any, tmp_path: Path) -> None:
    emulator = hitpaw_emulator_server
    emulator.reset()
    emulator.configure(job_seconds=3)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_HITPAW_DEFAULT": json.dumps(
            {"conn_type": "hitpaw", "host": emulator.base_url, "password": emulator.api_key}
        ),
        "HITPAW_EXAMPLE_SAMPLE_BASE_URL": f"{emulator.base_url}/samples",
    }
    airflow = [sys.executable, "-m", "airflow"]
    subprocess.run([*airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    run = subprocess.run(
        [*airflow, "dags", "test", "example_hitpaw_batch"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = run.stdout + run.stderr
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
