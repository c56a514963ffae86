"""A connection saved with a Fernet key set, then a deferral, on the line of this venv.

cryptography 51 broke exactly this on Airflow 2.11 to 3.1 (``get_fernet`` raised): ``connections add``
failed, and so did reading the saved connection and every deferral after it. The submission reads the
saved, encrypted connection; the wait defers through Fernet-encrypted trigger kwargs, but reads an
environment connection, because ``airflow dags test`` runs triggers where Airflow 3 sees no other.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

from airflow_provider_hitpaw.testing import run_dag

DAGS = Path(__file__).parent / "dags"
STATUS_PATH = "/api/task-status"


def airflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_saved_connection_with_a_fernet_key_drives_a_deferred_job(
    hitpaw_emulator: Any, tmp_path: Path
) -> None:
    hitpaw_emulator.configure(job_seconds=3600)
    home = tmp_path / "airflow"
    home.mkdir()
    fernet_key = Fernet.generate_key().decode()
    settings = {
        "AIRFLOW__CORE__FERNET_KEY": fernet_key,
        "HITPAW_TEST_IMAGE_URL": hitpaw_emulator.sample_url("shoe.jpg"),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env |= {"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False", **settings}

    migrated = airflow(env, "db", "migrate")
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    (home / ".hitpaw-migrated").touch()
    added = airflow(
        env,
        "connections",
        "add",
        "hitpaw_saved",
        "--conn-json",
        json.dumps(
            {"conn_type": "hitpaw", "host": hitpaw_emulator.base_url, "password": hitpaw_emulator.api_key}
        ),
    )
    assert added.returncode == 0, (added.stdout + added.stderr)[-3000:]
    with sqlite3.connect(home / "airflow.db") as db:
        [(encrypted, stored)] = db.execute(
            "SELECT is_encrypted, password FROM connection WHERE conn_id = 'hitpaw_saved'"
        ).fetchall()
    assert encrypted
    assert hitpaw_emulator.api_key not in stored

    run = functools.partial(
        run_dag,
        DAGS,
        "hitpaw_saved_connection",
        base_url=hitpaw_emulator.base_url,
        api_key=hitpaw_emulator.api_key,
        env=settings,
        airflow_home=home,
    )
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(run)
        # The job stays open until the sensor has looked once and the trigger has polled it too: the
        # wait happens in a deferral however fast or slow this machine is.
        while hitpaw_emulator.state()["requests"].get(STATUS_PATH, 0) < 2 and not running.done():
            time.sleep(0.2)
        for job in hitpaw_emulator.state()["jobs"]:
            hitpaw_emulator.finish_job(job["job_id"])
        result = running.result()
    assert result.succeeded, result.output[-6000:]
    [job] = hitpaw_emulator.state()["jobs"]
    assert job["status"] == "COMPLETED"
    with sqlite3.connect(home / "airflow.db") as db:
        states = dict(db.execute("SELECT task_id, state FROM task_instance").fetchall())
    assert states == {"submit": "success", "wait": "success"}
    # Every line runs the wait in line after deferring; the trigger polled the job it was handed.
    assert "[DAG TEST] running trigger in line" in result.output
    assert "[DAG TEST] Trigger completed" in result.output
