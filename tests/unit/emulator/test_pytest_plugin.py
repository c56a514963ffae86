"""The pytest plugin ``hitpaw``: cheap to load, and its fixtures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import requests

if TYPE_CHECKING:
    from airflow_provider_hitpaw.emulator.pytest_plugin import HitPawEmulatorHandle


def test_plugin_imports_nothing_heavy() -> None:
    code = (
        "import sys, airflow_provider_hitpaw.emulator.pytest_plugin\n"
        "heavy = [m for m in ('aiohttp', 'PIL', 'numpy', 'airflow', 'requests') if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == "[]"


def test_fixture(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    assert hitpaw_emulator.conn_id == "hitpaw_default"
    assert hitpaw_emulator.api_key.startswith("emu-key-")
    conn = json.loads(os.environ["AIRFLOW_CONN_HITPAW_DEFAULT"])
    assert conn == {
        "conn_type": "hitpaw",
        "host": hitpaw_emulator.base_url,
        "password": hitpaw_emulator.api_key,
    }
    response = requests.post(
        conn["host"] + "/api/task-status",
        json={"job_id": "x"},
        headers={"Apikey": conn["password"]},
        timeout=5,
    )
    assert response.json()["code"] == 100400002
    hitpaw_emulator.configure(coins=0)
    hitpaw_emulator.set_faults(["500"])


def test_fixture_resets_between_tests(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    state = hitpaw_emulator.state()
    assert state["coins"] == 100_000
    assert state["faults"] == []
    assert state["config"]["job_seconds"] == 0.2
